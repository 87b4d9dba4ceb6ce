"""Stand-ins for vendor GPU tools, installed into simulated lab hosts.

Each module is a standalone, standard-library-only program: the lab writes
``install_text(profile)`` to a host's root prefix so the agent meets output in
the exact formats the real tools print, on a machine without GPUs.
"""
