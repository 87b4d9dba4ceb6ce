"""Hardware and engine detection: one small detector per source (each a pure parser fed by
a thin reader of the host root); `detect_host` runs them all, a failing one adds a warning
and the others go on."""
