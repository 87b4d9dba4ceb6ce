from mlfleet.agent.cli import main

raise SystemExit(main())
