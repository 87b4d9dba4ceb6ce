from mlfleet.controller.cli import main

raise SystemExit(main())
