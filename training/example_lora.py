"""Kai's LoRA for the example storyboard (assets/examples/demo_world.yaml), trained exactly as the studio trains it.

    python -m training.example_lora      # writes assets/examples/refs/kai_lora.safetensors (2,000 steps, CPU)

It imports the storyboard into a throw-away data folder, queues the studio's own `train_adapter` job for Kai (the
demo preset's LoRA settings, his six captioned reference stills) and runs it on an in-process worker, then copies
the adapter the job registered to `--out`. The file's header records the run's recipe (base model, references
with their captions, settings); `import` and `render` use the shipped file only while the recipe the studio would
train now is the same, so a changed still, caption or setting trains a new LoRA instead of using a stale one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from training.demo_example import EXAMPLE, REFS_DIR

CHARACTER_NAME = "Kai"
DEFAULT_OUT = REFS_DIR / "kai_lora.safetensors"


def train_example_lora(out: Path, device: str = "cpu", log=None) -> Path:
    """Train Kai's LoRA through the studio's job and write it to `out` (atomically); returns `out`."""
    from studio.characters.adapters import current_adapter, request_training
    from studio.config import load_settings
    from studio.render import run_jobs
    from studio.services import build_services
    from studio.storyboard_file import import_storyboard, load_storyboard
    from studio.worker.process import Worker, default_worker_id

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="example-lora-") as data_dir:
        services = build_services(load_settings(None, data_dir=data_dir, device=device))
        try:
            report = import_storyboard(services, load_storyboard(EXAMPLE), EXAMPLE.parent, attach_adapters=False)
            kai = next(c for c in services.characters.list(report.project_id) if c.name == CHARACTER_NAME)
            job = request_training(services, kai.id, "lora")
            worker = Worker(services, worker_id=default_worker_id(f"example-lora-{os.getpid()}"), poll_interval_s=0.2)
            run_jobs(services, worker, [job], f"training {CHARACTER_NAME}'s LoRA", log)
            adapter = current_adapter(services, kai.id, "lora", services.projects.get(report.project_id).preset)
            out.parent.mkdir(parents=True, exist_ok=True)
            partial = out.with_name(out.name + ".partial")
            shutil.copyfile(services.assets.path_of(adapter.weights_asset_id), partial)
            os.replace(partial, out)
        finally:
            services.close()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the LoRA file to write")
    parser.add_argument("--device", default="cpu", help="cpu (the shipped file), cuda or auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; 1 on a machine busy with other work)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(train_example_lora(args.out, args.device))


if __name__ == "__main__":
    main()
