"""transfer_model on a tiny Hugging Face Llama (Orpheus/Llasa-style flat vocabulary), built offline from a config.

transformers is an optional (dev) dependency: these tests skip when it is absent.
"""
import io

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from codecswap_nb.transfer import TokenLayout, codec_rows, map_ids, transfer_model  # noqa: E402

N_TEXT, N_Q, K = 10, 2, 4          # text ids 0..9, codec block 10..17 (2 levels x 4 codes)
BOS, EOS, PAD = 18, 19, 20         # specials after the block
VOCAB = N_TEXT + N_Q * K + 3


def tiny_llama(tie: bool, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                      tie_word_embeddings=tie, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    return LlamaForCausalLM(cfg).eval()


def codec(name, n_q, k):
    "A codec's record (`CodecInfo.to_dict()`-like): name, vocabulary and rates."
    return dict(name=name, n_q=n_q, codebook_size=k, sample_rate=24000, frame_rate=75.0)


def counts(n_new, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 5, size=(n_new, N_Q * K)) * (rng.random((n_new, N_Q * K)) < 0.6)
    c[c.sum(1) == 0, 0] = 1
    return c.astype(np.float64)


LAYOUT = TokenLayout.flat_vocab(n_q=N_Q, codebook_size=K, offset=N_TEXT, codec="old_codec")


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("new_shape", [(3, 5), (1, 3)])   # block grows (8 -> 15) / shrinks (8 -> 3)
def test_llama_flat_vocab(tie, new_shape):
    torch.set_num_threads(1)
    model = tiny_llama(tie)
    emb0 = model.get_input_embeddings().weight.detach().clone()
    head0 = model.get_output_embeddings().weight.detach().clone()
    n_new, k_new = new_shape
    C = counts(n_new * k_new)
    ref = (C / C.sum(1, keepdims=True)) @ emb0[N_TEXT:N_TEXT + N_Q * K].double().numpy()
    ref_h = (C / C.sum(1, keepdims=True)) @ head0[N_TEXT:N_TEXT + N_Q * K].double().numpy()

    new_codec = codec("new_codec", n_new, k_new)
    report = transfer_model(model, C, LAYOUT, new_codec, method="weighted")
    delta = n_new * k_new - N_Q * K
    V = VOCAB + delta
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()

    # shapes, text and special rows bit-identical, new block = numpy reference
    assert emb.weight.shape == (V, 16) and head.weight.shape == (V, 16)
    assert torch.equal(emb.weight[:N_TEXT], emb0[:N_TEXT])
    assert torch.equal(emb.weight[N_TEXT + n_new * k_new:], emb0[N_TEXT + N_Q * K:])
    np.testing.assert_allclose(emb.weight[N_TEXT:N_TEXT + n_new * k_new].detach().double().numpy(), ref, rtol=1e-5, atol=1e-6)
    if tie:
        assert head.weight is emb.weight and report["heads"]["tied"]
    else:
        assert head.weight is not emb.weight and not report["heads"]["tied"]
        assert torch.equal(head.weight[N_TEXT + n_new * k_new:], head0[N_TEXT + N_Q * K:])
        np.testing.assert_allclose(head.weight[N_TEXT:N_TEXT + n_new * k_new].detach().double().numpy(), ref_h, rtol=1e-5, atol=1e-6)

    # ids after the block moved by delta, everywhere
    assert report["id_shift"] == dict(from_id=N_TEXT + N_Q * K, delta=delta)
    new_layout = TokenLayout.from_dict(report["new_layout"])
    assert map_ids([BOS, EOS, PAD, 3], LAYOUT, new_layout) == [BOS + delta, EOS + delta, PAD + delta, 3]
    cfg = model.config
    assert (cfg.vocab_size, cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (V, BOS + delta, EOS + delta, PAD + delta)
    assert model.generation_config.pad_token_id == PAD + delta
    assert emb.padding_idx == PAD + delta
    assert cfg.codec == new_codec and model.codec is new_codec
    np.testing.assert_allclose(codec_rows(model, new_layout).double().numpy(), ref, rtol=1e-5, atol=1e-6)

    # trainable: loss over the new vocabulary, gradients reach the new rows
    ids = torch.tensor([[BOS + delta, 3, N_TEXT, N_TEXT + n_new * k_new - 1, EOS + delta]])
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (1, 5, V) and torch.isfinite(out.loss)
    out.loss.backward()
    assert emb.weight.grad is not None and emb.weight.grad[N_TEXT:N_TEXT + n_new * k_new].abs().sum() > 0
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()

    # state-dict round trip into a model built from the updated config
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = LlamaForCausalLM(model.config).eval()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    if tie:
        assert fresh.get_output_embeddings().weight is fresh.get_input_embeddings().weight
    with torch.no_grad():
        torch.testing.assert_close(fresh(input_ids=ids).logits, model(input_ids=ids).logits)


def test_llama_save_pretrained_roundtrip(tmp_path):
    torch.set_num_threads(1)
    model = tiny_llama(tie=True)
    transfer_model(model, counts(15), LAYOUT, codec("new_codec", 3, 5), method="argmax")
    model.save_pretrained(tmp_path)
    back = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert back.config.vocab_size == VOCAB + 7 and back.config.codec == codec("new_codec", 3, 5)
    assert torch.equal(back.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert back.get_output_embeddings().weight is back.get_input_embeddings().weight


def test_llama_specials_before_block():
    "Orpheus-style: text, then a few specials, then the codec block at an offset, then more specials."
    torch.set_num_threads(1)
    model = tiny_llama(tie=False)
    lay = TokenLayout.flat_vocab(n_q=1, codebook_size=6, offset=12)  # ids 10, 11: specials before the block
    w0 = model.get_input_embeddings().weight.detach().clone()
    C = counts(4)[:, :6]
    C[C.sum(1) == 0, 0] = 1
    report = transfer_model(model, C, lay, codec("new_codec", 1, 4), method="argmax")
    w = model.get_input_embeddings().weight
    assert w.shape[0] == VOCAB - 2 and report["id_shift"]["delta"] == -2
    assert torch.equal(w[:12], w0[:12]) and torch.equal(w[16:], w0[18:])
    assert torch.equal(w[12:16], w0[12:18][torch.as_tensor(C.argmax(1))])
    assert model.config.pad_token_id == PAD - 2


def test_llama_layout_errors():
    model = tiny_llama(tie=True)
    with pytest.raises(ValueError, match="check offset"):
        transfer_model(model, counts(15), TokenLayout.flat_vocab(n_q=2, codebook_size=8, offset=10), codec("n", 3, 5))
    with pytest.raises(ValueError, match="has no 'model.embed'"):
        transfer_model(model, counts(15), TokenLayout.flat_vocab(n_q=2, codebook_size=4, offset=10, embeddings="model.embed"),
                       codec("n", 3, 5))
    with pytest.raises(ValueError, match="counts have shape"):
        transfer_model(model, counts(14), LAYOUT, codec("n", 3, 5))
    assert model.get_input_embeddings().weight.shape[0] == VOCAB  # untouched
