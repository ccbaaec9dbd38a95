"""`edgekd data SOURCE`: load a dataset the way every command will, and show what edgekd sees."""
from __future__ import annotations

import json

import click


@click.command("data")
@click.argument("source", default="digits")
@click.option("--image-size", type=click.IntRange(min=4), default=None, help="Resample images to N×N.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/val/test split.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def command(source: str, image_size: int | None, seed: int, as_json: bool) -> None:
    """Check a dataset: shapes, classes, split sizes, normalization and fingerprint.

    SOURCE is `digits` (built in, no download), an .npz file with `x` and `y` arrays, or a folder
    with one sub-folder of images per class.
    """
    from edgekd.data import load_dataset

    ds = load_dataset(source, image_size=image_size, seed=seed)
    info = ds.summary()
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"dataset      {info['name']} ({info['task']})")
    click.echo(f"input shape  {'x'.join(map(str, info['input_shape']))}")
    click.echo(f"classes      {info['num_classes']}: {', '.join(info['class_names'][:12])}")
    click.echo(f"splits       train {info['sizes']['train']}, val {info['sizes']['val']}, test {info['sizes']['test']}")
    if info.get("task", "image") == "image":
        norm = info["normalization"]
        mean = ", ".join(f"{v:.4f}" for v in norm["mean"])
        std = ", ".join(f"{v:.4f}" for v in norm["std"])
        pre = info.get("preprocess") or {}
        size = f", resampled to {pre['image_size']}x{pre['image_size']}" if pre.get("image_size") else ""
        click.echo(f"scale        pixels to [0, 1] (uint8 / 255){size}")
        click.echo(f"normalize    (x - mean) / std per channel, from the train split: mean [{mean}], std [{std}]")
    click.echo(f"fingerprint  {info['fingerprint']}")
