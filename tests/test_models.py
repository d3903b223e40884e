import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_decoder, tiny_gpt

from gptlab.core.errors import ConfigError
from gptlab.models import GPT


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_gpt124m_parameter_count():
    # GPT-2 small with an untied output head (the seed's count): 163,009,536.
    model = GPT(vocab_size=50257, context_length=1024, emb_dim=768, n_heads=12, n_layers=12, qkv_bias=False)
    assert n_params(model) == 163_009_536


def test_gpt_parameter_count_by_hand():
    v, t, d, n = 50, 16, 32, 2
    per_block = 3 * d * d + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d) + 4 * d
    assert n_params(tiny_gpt()) == v * d + t * d + n * per_block + 2 * d + d * v
    assert n_params(tiny_gpt(qkv_bias=True)) == n_params(tiny_gpt()) + n * 3 * d


def test_decoder_parameter_count_by_hand():
    v, d, n, ff = 50, 32, 2, 128
    attn = 4 * d * d + 4 * d  # in_proj (3d x d + 3d) and out_proj (d x d + d)
    per_layer = 2 * attn + (d * ff + ff) + (ff * d + d) + 3 * 2 * d
    # The final LayerNorm and the memory's LayerNorm: 2 x 2d.
    assert n_params(tiny_decoder()) == v * d + n * per_layer + 2 * 2 * d + (d * v + v)


def test_decoder_tokens_and_positions_enter_at_the_same_scale():
    model = tiny_decoder(emb_dim=128, vocab_size=65, context_length=64)
    tokens = model.embed.weight * model.emb_scale
    token_rms, position_rms = tokens.pow(2).mean().sqrt().item(), model.positions.pow(2).mean().sqrt().item()
    assert 0.9 < token_rms < 1.1 and position_rms == pytest.approx(0.5**0.5, rel=0.01)  # not 11.3 vs 0.71


def test_decoder_cross_attention_reads_normalised_memory():
    model = tiny_decoder()
    memories = []

    def record_key(module, args, kwargs):  # the cross-attention's keys are the memory
        memories.append(args[1] if len(args) > 1 else kwargs["key"])

    model.decoder.layers[0].multihead_attn.register_forward_pre_hook(record_key, with_kwargs=True)
    with torch.no_grad():
        model.embed.weight.mul_(10)  # large embeddings, as training can make them
        model(torch.randint(0, 50, (2, 16)))
    [memory] = memories
    assert memory.mean(-1).abs().max() < 1e-4
    assert torch.allclose(memory.std(-1, unbiased=False), torch.ones(2, 16), atol=1e-3)


@pytest.mark.parametrize("make_model", [tiny_gpt, tiny_decoder], ids=["gpt", "decoder"])
def test_changing_a_later_token_never_changes_earlier_outputs(make_model):
    torch.manual_seed(0)
    model = make_model().eval()
    idx = torch.randint(0, 50, (2, 16))
    base = model(idx)
    for t in range(15):
        changed = idx.clone()
        changed[:, t + 1] = (changed[:, t + 1] + 1) % 50
        out = model(changed)
        assert torch.allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5), f"position <= {t} saw token {t + 1}"
        assert not torch.allclose(out[:, t + 1], base[:, t + 1]), "the changed position itself must change"


@pytest.mark.parametrize("make_model", [tiny_gpt, tiny_decoder], ids=["gpt", "decoder"])
def test_overfits_one_tiny_batch(make_model):
    torch.manual_seed(0)
    model = make_model()
    batch = torch.randint(0, 50, (4, 17))
    inputs, targets = batch[:, :-1], batch[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(200):
        loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5


def test_fast_attention_matches_reference_attention():
    torch.manual_seed(0)
    fast = tiny_gpt(attn_impl="sdpa")
    reference = tiny_gpt(attn_impl="manual")
    reference.load_state_dict(fast.state_dict())
    idx = torch.randint(0, 50, (3, 16))
    out_fast, out_ref = fast(idx), reference(idx)
    assert torch.allclose(out_fast, out_ref, atol=1e-5)
    out_fast.square().mean().backward()
    out_ref.square().mean().backward()
    for (name, p_fast), p_ref in zip(fast.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p_fast.grad, p_ref.grad, atol=1e-5), name


@pytest.mark.parametrize("make_model", [tiny_gpt, tiny_decoder], ids=["gpt", "decoder"])
def test_heads_must_divide_embedding(make_model):
    with pytest.raises(ConfigError, match="emb_dim=30 is not divisible by model.n_heads=4"):
        make_model(emb_dim=30)


@pytest.mark.parametrize("make_model", [tiny_gpt, tiny_decoder], ids=["gpt", "decoder"])
def test_window_longer_than_context_is_rejected(make_model):
    with pytest.raises(ConfigError, match="longer than model.context_length=16"):
        make_model()(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize(
    "bad, message",
    [({"n_layers": 0}, "n_layers must be a positive integer"), ({"drop_rate": 1.0}, "drop_rate must be in")],
)
def test_bad_shapes_are_rejected(bad, message):
    with pytest.raises(ConfigError, match=message):
        tiny_gpt(**bad)


def test_unknown_gpt_setting_is_named():
    with pytest.raises(ConfigError, match="unknown GPT setting"):
        tiny_gpt(n_embd=32)


def test_gpt_gelu_is_gpt2s_tanh_approximation_or_the_exact_one():
    x = torch.linspace(-4, 4, 101)
    tanh, exact = tiny_gpt().blocks[0].ff.gelu, tiny_gpt(gelu="exact").blocks[0].ff.gelu
    assert torch.allclose(tanh(x), 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3))), atol=1e-6)
    assert torch.allclose(exact(x), 0.5 * x * (1 + torch.erf(x / 2**0.5)), atol=1e-6)
    assert not torch.allclose(tanh(x), exact(x), atol=1e-4, rtol=0)


def test_gpt_init_gpt2_or_the_books_pytorch_defaults():
    gpt2, book = tiny_gpt(emb_dim=64), tiny_gpt(emb_dim=64, init="pytorch")
    assert gpt2.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert book.tok_emb.weight.std().item() == pytest.approx(1.0, rel=0.1)  # nn.Embedding's N(0, 1)
    qkv = book.blocks[0].attn.qkv.weight
    bound = 64**-0.5  # nn.Linear's U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert qkv.abs().max().item() <= bound and qkv.std().item() == pytest.approx(bound / 3**0.5, rel=0.1)
    with pytest.raises(ConfigError, match="model.init must be one of"):
        tiny_gpt(init="xavier")
