"""`edgekd teacher`: train a teacher with cross-entropy and early stopping on val accuracy."""
from __future__ import annotations

import click

from edgekd.cli.params import FloatRange

from edgekd.cli.distill_cmd import echo_log, print_summary
from edgekd.distill.teacher_recipe import TEACHER_EPOCHS, TEACHER_VIEWS


@click.command("teacher")
@click.option("--data", default="digits", show_default=True,
              help="Dataset: `digits` (built in), an .npz with x/y, or an image folder.")
@click.option("--image-size", type=click.IntRange(min=4), default=None, help="Resample images to N×N (students must use the same size).")
@click.option("--max-len", type=click.IntRange(min=3), default=None, help="Text data: token sequence length. [default: 32]")
@click.option("--tokenizer", default=None, help="Text data: local tokenizer (dir with tokenizer.json or vocab.txt, or a text "
              "checkpoint). [default: WordPiece learned from the train split]")
@click.option("--from-hf", "from_hf", default=None, type=click.Path(exists=True, file_okay=False),
              help="Import a local Hugging Face BERT sequence classifier (save_pretrained dir) as RUN/student.pt instead of training.")
@click.option("--arch", default=None, help="Teacher model spec (see `edgekd models`). [default: the default teacher family]")
@click.option("--epochs", type=click.IntRange(min=1), default=TEACHER_EPOCHS, show_default=True,
              help="Epochs (the cosine learning-rate schedule spans them).")
@click.option("--patience", type=click.IntRange(min=0), default=0, show_default=True,
              help="Stop after this many epochs without a better val accuracy (0: never stop early; the best-on-val "
              "weights are kept either way).")
@click.option("--lr", type=FloatRange(min=0, min_open=True), default=3e-3, show_default=True, help="Peak learning rate (AdamW, cosine decay).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Batch size.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of init and data order.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch CPU threads (0: one per core; 1 is often faster for small models on a busy machine).")
@click.option("--views", type=click.IntRange(min=0), default=TEACHER_VIEWS, show_default=True,
              help="Train on N per-epoch shifted views of the train split, one per epoch (each image shifted by up to "
              "0.075 of its side, whole pixels: none at 8x8): the views the default distillation recipe shows the "
              "student, so the teacher has seen what it labels; 0: the clean images.")
@click.option("-o", "--output", required=True, help="Run directory to create; the teacher is saved as RUN/student.pt.")
@click.option("--resume", is_flag=True, help="Continue the run in -o from its last checkpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object (no progress output).")
def command(data: str, image_size: int | None, max_len: int | None, tokenizer: str | None, from_hf: str | None,
            arch: str | None, epochs: int, patience: int, lr: float,
            batch_size: int, seed: int, threads: int, views: int, output: str, resume: bool, as_json: bool) -> None:
    """Train a teacher on labels (cross-entropy), keep the best-on-val weights.

    The checkpoint RUN/student.pt is what `edgekd distill --teacher` takes. Any ONNX classifier
    (e.g. a Keras model exported to ONNX) can be used as a teacher instead, without this step.
    """
    from edgekd import api

    if from_hf is not None:  # nothing to train: convert the local HF model (parity-checked) into RUN/student.pt
        from pathlib import Path

        from edgekd.models.hf_bert import import_hf_teacher

        import json

        path = import_hf_teacher(from_hf, Path(output) / "student.pt", max_len=max_len or 32)
        info = {"role": "teacher", "student_path": str(path), "source": f"huggingface:{from_hf}"}
        click.echo(json.dumps(info) if as_json else f"saved        {path}  (converted from {from_hf})")
        return
    cfg = api.teacher_config(data=data, image_size=image_size, arch=arch, epochs=epochs, patience=patience,
                             seed=seed, lr=lr, batch_size=batch_size, threads=threads,
                             output=output, max_len=max_len, tokenizer=tokenizer, views=views)
    summary = api.train_teacher(cfg, resume=resume, progress=False if as_json else None, log=echo_log(as_json))
    print_summary(summary, as_json)
