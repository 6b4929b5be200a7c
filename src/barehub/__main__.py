from barehub.cli import main

raise SystemExit(main())
