"""`courtcast cluster-demo`: the compose topology as processes on 127.0.0.1, until Ctrl-C."""

from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from courtcast.cli.common import UsageError


def add_cluster_demo_command(sub: Any) -> None:
    demo = sub.add_parser(
        "cluster-demo",
        help="run a cluster on this host: Redis, S3, 2 media nodes, 2 recorders, nginx",
    )
    demo.add_argument("--port", type=int, default=8000, help="nginx's port (default 8000)")
    demo.add_argument("--control-rooms", type=int, default=1, choices=(1, 2))
    demo.add_argument(
        "--data-dir", type=Path, help="where everything lives (default: a temporary dir)"
    )
    demo.set_defaults(func=cmd_cluster_demo)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def cmd_cluster_demo(args: argparse.Namespace) -> int:
    from courtcast.cluster_demo import ClusterDemo, DemoError

    temporary = args.data_dir is None
    root = Path(tempfile.mkdtemp(prefix="courtcast-cluster-")) if temporary else args.data_dir
    demo = ClusterDemo(root.resolve(), args.port, args.control_rooms)
    # Ctrl-C, even when started where SIGINT is ignored (a shell's background job), and
    # SIGTERM stop everything the same way
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    told: set[str] = set()
    try:
        demo.start()
        print(demo.describe(), flush=True)
        while True:
            for name in set(demo.dead()) - told:
                print(f"{name} exited: see {root}/{name}.log", flush=True)
                told.add(name)
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("stopping", flush=True)
        return 0
    except DemoError as exc:
        raise UsageError(str(exc)) from None
    finally:
        demo.stop()
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
