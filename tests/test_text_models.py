"""Text models, TinyBERT losses, DistilBERT-style init, Hugging Face teachers, text export (tiny configs)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgekd.distill.losses import LOSSES, LossInputs, build_loss_stack
from edgekd.distill.taps import FeatureTaps
from edgekd.errors import ConfigError
from edgekd.models import MODELS, count_params, create_model, load_model, save_model, ModelInfo
from edgekd.models.bert import example_ids, with_vocab

VOCAB, LEN, K = 50, 16, 3
TEACHER = "bert:layers=2,hidden=32,heads=2,intermediate=64"
STUDENT = "tinybert:layers=1,hidden=16,heads=2,intermediate=32"


def build(spec: str, seed: int = 0):
    torch.manual_seed(seed)
    return create_model(with_vocab(spec, VOCAB), (LEN,), K).eval()


def probe_for(student, teacher):
    def probe(role, path):
        model = student if role == "student" else teacher
        with FeatureTaps(model, [path], role=role) as taps, torch.no_grad():
            model(example_ids(model, 2))
            return tuple(taps.features[path].shape[1:])

    return probe


@pytest.mark.parametrize("name", [n for n in MODELS.names() if MODELS.get(n).task == "text"])
def test_text_families_build_and_mask_padding(name):
    model = build(f"{name}:layers=1,hidden=32,heads=2,intermediate=64")
    ids = example_ids(model, 2, 10)
    padded = torch.cat([ids, torch.zeros(2, 6, dtype=torch.long)], dim=1)
    with torch.no_grad():
        short, long_, explicit = model(ids), model(padded), model(padded, (padded != 0).long())
    assert short.shape == (2, K)
    torch.testing.assert_close(short, long_, atol=1e-5, rtol=1e-5)  # padding changes nothing
    torch.testing.assert_close(long_, explicit)
    assert MODELS.get(name).role in ("teacher", "student")


def test_spec_vocab_rules():
    assert "vocab=50" in with_vocab(STUDENT, 50)
    with pytest.raises(ConfigError, match="vocab=7 but the tokenizer has 50"):
        with_vocab(STUDENT + ",vocab=7", 50)
    with pytest.raises(ConfigError, match="vocab is not set"):
        create_model(STUDENT, (LEN,), K)
    with pytest.raises(ConfigError, match="divisible by heads"):
        create_model("tinybert:hidden=30,heads=4,vocab=10", (LEN,), K)


def test_checkpoint_round_trip_keeps_pad_id(tmp_path):
    model = build(STUDENT)
    model.pad_id.fill_(3)
    info = ModelInfo(spec=with_vocab(STUDENT, VOCAB), task="text", input_shape=(LEN,), num_classes=K, normalization={})
    save_model(tmp_path / "m.pt", model, info)
    loaded, got = load_model(tmp_path / "m.pt")
    assert int(loaded.pad_id) == 3 and got.task == "text"
    ids = example_ids(model, 2)
    torch.testing.assert_close(loaded(ids), model(ids))


def test_init_from_teacher_every_kth_layer():
    from edgekd.models.bert_init import init_from_teacher

    teacher = build("bert:layers=4,hidden=32,heads=2,intermediate=64")
    student = build("tinybert:layers=2,hidden=32,heads=2,intermediate=64", seed=1)
    assert init_from_teacher(student, teacher) == [0, 2]
    torch.testing.assert_close(student.layers[1].output.weight, teacher.layers[2].output.weight)
    torch.testing.assert_close(student.embeddings.word.weight, teacher.embeddings.word.weight)
    with pytest.raises(ConfigError, match="hidden is 16 vs 32"):
        init_from_teacher(build(STUDENT), teacher)


def test_text_losses_registered_and_zero_for_identical_models():
    assert {"hidden_align", "attention_align"} <= set(LOSSES.names())
    teacher = build(TEACHER)
    twin = build(TEACHER)
    twin.load_state_dict(teacher.state_dict())
    stack = build_loss_stack([{"key": "attention_align"}, {"key": "attention_align", "kwargs": {"target": "probs"}}],
                             probe_for(twin, teacher))
    ids = example_ids(teacher, 3)
    ids[1:, 8:] = 0
    with FeatureTaps(twin, stack.student_taps) as s_taps, FeatureTaps(teacher, stack.teacher_taps) as t_taps:
        logits = twin(ids)
        teacher(ids)
        total, parts = stack(LossInputs(logits, torch.zeros(3, dtype=torch.long), None,
                                        s_taps.features, t_taps.features))
    assert float(total) == pytest.approx(0.0, abs=1e-8)


def test_hidden_and_attention_alignment_train_a_narrower_student():
    # narrower (16 vs 32) and with fewer heads (2 vs 4): projections and head-averaged maps
    teacher, student = build("bert:layers=2,hidden=32,heads=4,intermediate=64"), build(STUDENT)
    stack = build_loss_stack([{"key": "hidden_align"}, {"key": "attention_align"}], probe_for(student, teacher))
    hidden = stack.parts[0]
    # uniform map: embeddings + student layer 0 <- teacher layer 1 (the last), learned 16 -> 32 projections
    assert hidden.pairs == [("embeddings", "embeddings"), ("layers.0", "layers.1")]
    assert [tuple(p.weight.shape) for p in hidden.proj] == [(32, 16), (32, 16)]
    assert stack.parts[1].pairs == [("layers.0.attention.scores", "layers.1.attention.scores")]
    student.train()
    opt = torch.optim.Adam([*student.parameters(), *stack.parameters()], lr=1e-2)
    ids = example_ids(teacher, 8)
    values = []
    for _ in range(15):
        with FeatureTaps(student, stack.student_taps) as s, FeatureTaps(teacher, stack.teacher_taps) as t:
            logits = student(ids)
            with torch.no_grad():
                teacher(ids)
            total, _ = stack(LossInputs(logits, torch.zeros(8, dtype=torch.long), None, s.features, t.features))
        opt.zero_grad()
        total.backward()
        opt.step()
        values.append(float(total))
    assert values[-1] < 0.5 * values[0]
    with pytest.raises(ConfigError, match="explicit"):
        build_loss_stack([{"key": "hidden_align"}], probe_for(teacher, student))  # 2-layer onto 1-layer


def test_hf_bert_directory_becomes_an_edgekd_teacher(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    from edgekd.distill.teachers import load_teacher
    from edgekd.models.hf_bert import import_hf_teacher
    from edgekd.data.tokenizer import train_wordpiece

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=K)
    hf = BertForSequenceClassification(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    train_wordpiece(["the screen is good", "the price is bad"], vocab_size=VOCAB).save(tmp_path / "hf")
    out = import_hf_teacher(tmp_path / "hf", tmp_path / "t.pt", max_len=LEN)
    teacher = load_teacher(out)
    assert teacher.input_shape == (LEN,) and teacher.num_classes == K
    ids = example_ids(teacher.module, 3)
    with torch.no_grad():
        ref = hf(input_ids=ids).logits.numpy()
    np.testing.assert_allclose(teacher.logits(ids.numpy().astype(np.float32)), ref, atol=1e-4)
    assert "tokenizer_json" in teacher.info.meta
    from edgekd.data.tokenizer import load_tokenizer

    assert load_tokenizer(out).pad_id == 0  # --tokenizer accepts the checkpoint itself


def test_onnx_export_dynamic_batch_and_sequence_with_parity(tmp_path):
    import onnxruntime as ort

    from edgekd.runtimes import RUNTIMES
    from edgekd.runtimes.base import feeds_from_nchw, read_manifest

    model = build(STUDENT)
    info = ModelInfo(spec=with_vocab(STUDENT, VOCAB), task="text", input_shape=(LEN,), num_classes=K,
                     normalization={}, meta={"pad_id": 0})
    art = RUNTIMES.get("onnxruntime").export(model, info, tmp_path / "fp32", precision="fp32", calibration=None)
    manifest = read_manifest(art)
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "attention_mask"]
    assert manifest["inputs"][0]["shape"] == [-1, -1] and manifest["inputs"][0]["dtype"] == "int64"
    runner = RUNTIMES.get("onnxruntime").load(art, threads=1)
    sess = ort.InferenceSession(str(art / "model.onnx"))
    assert [i.shape for i in sess.get_inputs()] == [["batch", "seq"], ["batch", "seq"]]
    for batch, length in ((1, LEN), (3, 7)):
        ids = example_ids(model, batch, length).numpy()
        ids[-1, length // 2:] = 0
        got = runner.run(feeds_from_nchw(manifest, ids))
        with torch.no_grad():
            ref = model(torch.from_numpy(ids)).numpy()
        np.testing.assert_allclose(got, ref, atol=1e-4)
    calib = [{"input": example_ids(model, 1).numpy()} for _ in range(4)]
    for mode in ("dynamic", "static"):
        q = RUNTIMES.get("onnxruntime").export(model, info, tmp_path / mode, precision="int8", calibration=calib,
                                               int8_mode=mode)
        assert json.loads((q / "manifest.json").read_text())["options"]["int8_mode"] == mode
        ids = example_ids(model, 2).numpy()
        out = RUNTIMES.get("onnxruntime").load(q, threads=1).run(feeds_from_nchw(manifest, ids))
        assert out.shape == (2, K) and np.isfinite(out).all()


def test_openvino_export_of_a_text_model_runs_with_parity(tmp_path):
    from edgekd.errors import ExportError
    from edgekd.runtimes import RUNTIMES
    from edgekd.runtimes.base import feeds_from_nchw, read_manifest

    ov = RUNTIMES.get("openvino")
    if ov.unavailable_reason():
        pytest.skip(ov.unavailable_reason())
    model = build(STUDENT)
    info = ModelInfo(spec=with_vocab(STUDENT, VOCAB), task="text", input_shape=(LEN,), num_classes=K,
                     normalization={}, meta={"pad_id": 0, "tokenizer_json": "{}", "tokenizer_sha256": "0" * 64})
    art = ov.export(model, info, tmp_path / "fp32", precision="fp32", calibration=None)
    manifest = read_manifest(art)
    assert manifest["options"]["precision_hint"] == "f32" and manifest["inputs"][0]["shape"] == [-1, -1]
    assert set(manifest["files"]) == {"model.xml", "model.bin", "tokenizer.json"}  # the tokenizer travels along
    ids = example_ids(model, 3, 7).numpy()
    ids[-1, 4:] = 0
    with torch.no_grad():
        ref = model(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(ov.load(art, threads=1).run(feeds_from_nchw(manifest, ids)), ref, atol=1e-4)
    calib = [{"input": example_ids(model, 1).numpy()} for _ in range(8)]
    q = ov.export(model, info, tmp_path / "int8", precision="int8", calibration=calib)
    qm = read_manifest(q)
    assert qm["options"]["int8_mode"] == "nncf-transformer" and qm["options"]["calibration_samples"] == 8
    out = ov.load(q, threads=1).run(feeds_from_nchw(qm, ids))
    assert out.shape == (3, K) and np.isfinite(out).all()
    with pytest.raises(ExportError, match="not fp16"):
        RUNTIMES.get("onnxruntime").export(model, info, tmp_path / "fp16", precision="fp16", calibration=None)


def test_onnx_text_classifier_is_a_teacher(tmp_path):
    from edgekd.distill.teachers import load_teacher
    from edgekd.runtimes.text_onnx import export_text_onnx

    model = build(STUDENT)
    path = export_text_onnx(model, tmp_path / "t.onnx", max_len=LEN)
    teacher = load_teacher(path)
    assert teacher.kind == "onnx-text"
    teacher.check_compatible((LEN,), K)
    ids = example_ids(model, 5).numpy()
    ids[2:, 9:] = 0
    with torch.no_grad():
        ref = model(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(teacher.logits(ids), ref, atol=1e-4)
    with pytest.raises(ConfigError, match="predicts 3 classes"):
        teacher.check_compatible((LEN,), 4)
