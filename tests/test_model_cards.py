"""Model cards render from model_cards/ templates and round-trip with valid model-index eval results."""

from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_specdec.hub import model_card

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints" / "digits"


@pytest.mark.parametrize("name", ["teacher", "draft-1L", "vq-tokenizer"])
def test_cards_round_trip_with_eval_results(name, tmp_path):
    card = model_card(str(CHECKPOINTS / name), f"org/{name}", extra_metrics={"fid": 4.5} if name == "teacher" else None,
                      teacher_repo="org/teacher", draft_repo="org/draft-1L")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    results = {r.metric_type: r.metric_value for r in loaded.data.eval_results}
    if name == "teacher":
        assert results["perplexity"] == pytest.approx(43.1168, rel=1e-3) and results["fid"] == 4.5
        assert 'VQGPTForCausalLM.from_pretrained("org/teacher")' in loaded.text
    elif name == "draft-1L":
        assert 0.85 < results["acceptance_alpha"] < 1.0
        assert "assistant_model=draft" in loaded.text
    else:
        assert results["psnr"] > 40
    assert loaded.data.library_name == "hf-specdec" and "{{" not in loaded.text
    assert f"# org/{name}" in loaded.text
