"""Hugging Face teachers from a local directory (nothing is downloaded).

    from edgekd.models.hf_bert import import_hf_teacher
    import_hf_teacher("path/to/bert-dir", "runs/hf-teacher/student.pt", max_len=64)

A directory written by `save_pretrained` (config.json + weights) of a BERT-architecture
`AutoModelForSequenceClassification` is loaded with `local_files_only=True`, its weights are copied
into edgekd's own `bert` family (the same post-LN encoder math), the two are compared on token ids
(max |diff| of the logits must be below `tol`), and the result is saved as an ordinary edgekd
checkpoint together with the directory's tokenizer. From then on it is a `TorchTeacher` like any
other: cached soft targets, hidden-state and attention taps, export, student initialization.

Other architectures: export them to ONNX yourself and use the ONNX file as the teacher.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.errors import ConfigError, ModelError

SUPPORTED = ("bert",)


def load_hf_classifier(directory: str | Path) -> Any:
    """`AutoModelForSequenceClassification.from_pretrained(directory, local_files_only=True)` in eval mode."""
    path = Path(directory).expanduser()
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: no config.json; give a directory written by save_pretrained")
    try:
        from transformers import AutoModelForSequenceClassification
    except ImportError as err:  # pragma: no cover - transformers is part of the host extra
        raise ModelError(f"transformers is not installed ({err}); pip install 'edgekd[host]'") from None
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ModelError(f"{path}: not a loadable sequence classifier ({first})") from None
    return model.eval()


def convert_bert(hf_model: Any, max_len: int) -> Any:
    """An edgekd `bert` TextTransformer holding the weights of a HF BertForSequenceClassification."""
    import torch

    from edgekd.models.spec import create_model
    from edgekd.models.bert import set_pad_id

    cfg = hf_model.config
    if cfg.model_type not in SUPPORTED:
        raise ConfigError(f"Hugging Face model type {cfg.model_type!r} is not converted (only {', '.join(SUPPORTED)}); "
                          "export it to ONNX and pass the .onnx file as the teacher")
    if getattr(cfg, "hidden_act", "gelu") != "gelu":
        raise ConfigError(f"hidden_act={cfg.hidden_act!r} is not supported (edgekd's bert uses exact GELU)")
    if max_len > cfg.max_position_embeddings:
        raise ConfigError(f"max_len={max_len} exceeds the model's {cfg.max_position_embeddings} positions")
    spec = (f"bert:layers={cfg.num_hidden_layers},hidden={cfg.hidden_size},heads={cfg.num_attention_heads},"
            f"intermediate={cfg.intermediate_size},vocab={cfg.vocab_size},dropout=0.0")
    model = create_model(spec, (int(max_len),), int(cfg.num_labels))
    set_pad_id(model, int(cfg.pad_token_id or 0))
    sd = hf_model.state_dict()

    def take(name: str) -> torch.Tensor:
        if name not in sd:
            raise ModelError(f"Hugging Face checkpoint lacks {name}; it is not a standard BertForSequenceClassification")
        return sd[name]

    new = {
        "embeddings.word.weight": take("bert.embeddings.word_embeddings.weight"),
        "embeddings.position.weight": take("bert.embeddings.position_embeddings.weight")[:max_len],
        "embeddings.token_type": take("bert.embeddings.token_type_embeddings.weight")[0],
        "embeddings.norm.weight": take("bert.embeddings.LayerNorm.weight"),
        "embeddings.norm.bias": take("bert.embeddings.LayerNorm.bias"),
        "features.dense.weight": take("bert.pooler.dense.weight"),
        "features.dense.bias": take("bert.pooler.dense.bias"),
        "classifier.weight": take("classifier.weight"),
        "classifier.bias": take("classifier.bias"),
        "pad_id": model.pad_id,
    }
    for i in range(cfg.num_hidden_layers):
        src, dst = f"bert.encoder.layer.{i}.", f"layers.{i}."
        pairs = {"attention.query": "attention.self.query", "attention.key": "attention.self.key",
                 "attention.value": "attention.self.value", "attention.output": "attention.output.dense",
                 "attention.norm": "attention.output.LayerNorm", "intermediate": "intermediate.dense",
                 "output": "output.dense", "norm": "output.LayerNorm"}
        for ours, theirs in pairs.items():
            for kind in ("weight", "bias"):
                new[f"{dst}{ours}.{kind}"] = take(f"{src}{theirs}.{kind}")
    model.load_state_dict(new, strict=True)
    return model.eval()


def max_logit_difference(hf_model: Any, model: Any, max_len: int, batch: int = 4) -> float:
    """max |HF logits - edgekd logits| on random ids with some padding."""
    import torch

    from edgekd.models.bert import example_ids

    ids = example_ids(model, batch=batch, length=max_len)
    mask = torch.ones_like(ids)
    mask[1:, max_len // 2:] = 0  # padded rows too
    ids = ids.masked_fill(mask == 0, int(model.pad_id))
    with torch.no_grad():
        theirs = hf_model(input_ids=ids, attention_mask=mask).logits
        ours = model(ids, mask)
    return float((theirs - ours).abs().max())


def import_hf_teacher(directory: str | Path, out_path: str | Path, *, max_len: int = 32,
                      tol: float = 1e-4) -> Path:
    """Convert a local HF BERT classifier into an edgekd teacher checkpoint (with its tokenizer)."""
    from edgekd.data.tokenizer import load_tokenizer
    from edgekd.models.checkpoint import ModelInfo, save_model

    directory = Path(directory).expanduser()
    hf_model = load_hf_classifier(directory)
    model = convert_bert(hf_model, max_len)
    diff = max_logit_difference(hf_model, model, max_len)
    if not diff <= tol:
        raise ModelError(f"{directory}: converted model differs from the Hugging Face one by {diff:.3g} > {tol}; "
                         "the architecture has options edgekd's bert does not reproduce")
    meta: dict[str, Any] = {"source": f"huggingface:{directory}", "conversion_max_abs": diff,
                            "pad_id": int(model.pad_id), "max_len": int(max_len)}
    try:
        tok = load_tokenizer(directory)
        meta.update(tokenizer_json=tok.to_json(), tokenizer_sha256=tok.sha256)
    except ConfigError:
        raise
    except Exception:  # no tokenizer saved with the model: the user passes --tokenizer later
        pass
    labels = getattr(hf_model.config, "id2label", None) or {}
    names = [str(labels.get(i, i)) for i in range(int(hf_model.config.num_labels))]
    spec = (f"bert:dropout=0.0,heads={hf_model.config.num_attention_heads},hidden={hf_model.config.hidden_size},"
            f"intermediate={hf_model.config.intermediate_size},layers={hf_model.config.num_hidden_layers},"
            f"vocab={hf_model.config.vocab_size}")
    info = ModelInfo(spec=spec, task="text", input_shape=(int(max_len),), num_classes=len(names), class_names=names,
                     normalization={}, meta=meta)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_model(out_path, model, info)
    return out_path
