import pytest
import torch

from hf_specdec import VQGPTConfig, VQGPTForCausalLM


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: needs --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def tiny_config(**overrides) -> VQGPTConfig:
    fields = dict(
        codebook_size=16, num_classes=3, grid_h=4, grid_w=4, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, dropout=0.0,
    )
    fields.update(overrides)
    return VQGPTConfig(**fields)


def tiny_model(seed: int = 0, **overrides) -> VQGPTForCausalLM:
    torch.manual_seed(seed)
    model = VQGPTForCausalLM(tiny_config(**overrides)).eval()
    # Random init gives near-uniform logits; sharper ones make greedy/cfg tests discriminative.
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    return model


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture(autouse=True, scope="session")
def _quiet_transformers():
    import transformers

    # assisted generation warns on every inner assistant.generate() call about max_length vs max_new_tokens
    transformers.logging.set_verbosity_error()
