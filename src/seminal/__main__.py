from seminal.cli import main

raise SystemExit(main())
