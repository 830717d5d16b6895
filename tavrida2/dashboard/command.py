"""``tavrida2 dashboard``: check the files, then serve the app with uvicorn until Ctrl-C."""

from __future__ import annotations

import argparse
import sys

from tavrida2.masking import mask_url_passwords


def serve(args: argparse.Namespace) -> int:
    """Run the dashboard the command line describes; 2 if its extra is not installed."""
    try:
        import uvicorn

        from tavrida2.dashboard.app import DashboardSettings, create_app
        from tavrida2.dashboard.system import load_system
    except ImportError as exc:
        print(
            f"tavrida2 dashboard: {exc.name or exc} is not installed; "
            "pip install 'tavrida2[dashboard]'",
            file=sys.stderr,
        )
        return 2
    if not 0 < args.port < 65536:
        print(f"tavrida2 dashboard: --port {args.port}: expected 1..65535", file=sys.stderr)
        return 2
    hosts = ["127.0.0.1", "localhost", "[::1]"]
    if args.host not in hosts:
        hosts = ["*"] if args.host in ("0.0.0.0", "::") else [*hosts, args.host]
    settings = DashboardSettings(
        configs=list(args.config),
        ds_files=list(args.ds),
        url=args.url,
        management_url=args.management_url,
        trace_db=args.db,
        allow_replay=args.allow_replay,
        allowed_hosts=hosts,
    )
    system = load_system(settings.configs, settings.ds_files, settings.url)
    for error in system.errors:
        print(f"tavrida2 dashboard: not loaded: {error.error}", file=sys.stderr)
    app = create_app(settings, system)
    mode = "replay allowed" if args.allow_replay else "read-only"
    print(
        f"tavrida2 dashboard: http://{args.host}:{args.port}/ ({mode}; broker "
        f"{mask_url_passwords(system.connection.to_url())}); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


__all__ = ["serve"]
