"""The statistics a speculative call reports, checked against counts made another way: tokens per round an image
took (not lowered by rows that wait for a batch's slowest one), and the pooled estimator every benchmark reports."""

import pytest
import torch

from hf_specdec import plain_sample, speculative_sample
from hf_specdec.speculative import pooled_statistics
from tests.conftest import tiny_model

NEW = 16  # tokens per image of the tiny models


@pytest.fixture(scope="module")
def pair():
    return tiny_model(0, num_hidden_layers=3), tiny_model(1, num_hidden_layers=1)


def rounds_to_finish(accepted: torch.Tensor, new_tokens: int) -> list[int]:
    """Rounds each row of an unstreamed call took, from the accepted drafts alone: a round gives a row its accepted
    drafts plus one token, until the row holds `new_tokens`."""
    made = (accepted + 1).cumsum(0)  # (rounds, rows)
    return [int((made[:, b] < new_tokens).sum().item()) + 1 for b in range(made.shape[1])]


def test_tokens_per_image_round_counts_the_rounds_each_image_took(pair):
    teacher, draft = pair
    out = speculative_sample(teacher, draft, teacher.class_prompt([0, 1, 2] * 3), gamma=3, mode="eager",
                             generator=torch.Generator().manual_seed(0))
    rounds = rounds_to_finish(out.accepted_per_round, NEW)
    assert max(rounds) == out.num_rounds and min(rounds) < out.num_rounds  # rows finish at different rounds
    assert out.tokens_per_image_round == pytest.approx(9 * NEW / sum(rounds))
    assert out.tokens_per_teacher_call == pytest.approx(9 * NEW / (9 * out.num_rounds))
    assert out.tokens_per_image_round > out.tokens_per_teacher_call


def test_a_streamed_call_counts_each_image_once(pair):
    teacher, draft = pair
    out = speculative_sample(teacher, draft, teacher.class_prompt([0, 1, 2, 0, 1]), gamma=3, batch_size=2,
                             mode="eager", generator=torch.Generator().manual_seed(1))
    active = out.active_per_round.sum().item()
    assert active < 2 * out.num_rounds  # a row waited at the end
    # each round an image was drawn gave it its accepted drafts plus one token: 5 images of NEW tokens
    made = (out.accepted_per_round + 1)[out.active_per_round].sum().item()
    assert made >= 5 * NEW and made - 5 * NEW < 5 * 4  # the last round of an image may be cut at the image's end
    assert out.tokens_per_image_round == pytest.approx(5 * NEW / active)


def test_at_batch_one_both_figures_agree(pair):
    teacher, draft = pair
    out = speculative_sample(teacher, draft, teacher.class_prompt([2]), gamma=4, mode="eager",
                             generator=torch.Generator().manual_seed(2))
    assert out.tokens_per_image_round == out.tokens_per_teacher_call == pytest.approx(NEW / out.num_rounds)


def test_pooled_statistics_are_ratios_of_sums_not_means_of_ratios(pair):
    teacher, draft = pair
    outputs = [speculative_sample(teacher, draft, teacher.class_prompt([c]), gamma=g, mode="eager",
                                  generator=torch.Generator().manual_seed(c))
               for c, g in [(0, 1), (1, 6), (2, 3)]]  # calls of different lengths: the two estimators differ
    pooled = pooled_statistics(outputs)
    accepted = sum(int(o.accepted_per_round.sum()) for o in outputs)
    tested = sum(int(o.evaluated_per_round.sum()) for o in outputs)
    rounds = sum(o.num_rounds for o in outputs)
    assert pooled["alpha"] == pytest.approx(accepted / tested)
    assert pooled["tokens_per_teacher_call"] == pytest.approx(3 * NEW / rounds)
    assert pooled["tokens_per_image_round"] == pytest.approx(3 * NEW / rounds)
    assert pooled["mean_gamma"] == pytest.approx(sum(sum(o.gamma_per_round) for o in outputs) / rounds)
    mean_of_ratios = sum(o.tokens_per_teacher_call for o in outputs) / 3
    assert pooled["tokens_per_teacher_call"] != pytest.approx(mean_of_ratios)
    assert pooled_statistics([])["alpha"] is None and pooled_statistics(iter(outputs))["calls"] == 3
    assert pooled_statistics(outputs[0])["alpha"] == pytest.approx(outputs[0].alpha)  # one call alone
    with pytest.raises(ValueError, match=r"`outputs\[1\]` is a Tensor, not the output of a speculative call"):
        pooled_statistics([outputs[0], plain_sample(teacher, teacher.class_prompt([0]))])


def test_paired_benchmark_reports_the_pooled_figures(tmp_path, monkeypatch):
    import hf_specdec.bench.paired as paired

    teacher = tiny_model(0, num_hidden_layers=3, codebook_size=16, grid_h=4, grid_w=4)
    teacher.save_pretrained(tmp_path / "teacher")
    tiny_model(1, num_hidden_layers=1, codebook_size=16, grid_h=4, grid_w=4).save_pretrained(tmp_path / "draft")
    seen = []
    original = paired.pooled_statistics

    def spy(outputs):
        outputs = list(outputs)
        seen.append(outputs)
        return original(outputs)

    monkeypatch.setattr(paired, "pooled_statistics", spy)
    result = paired.paired_benchmark("cpu", 3, {"d": str(tmp_path / "draft")}, teacher_path=str(tmp_path / "teacher"),
                                     gammas=(4,))
    calls = next(outputs for outputs in seen if len(outputs) == 3)
    accepted = sum(int(o.accepted_per_round.sum()) for o in calls)
    tested = sum(int(o.evaluated_per_round.sum()) for o in calls)
    assert result["results"]["d g4"]["alpha"] == pytest.approx(accepted / tested)
    assert result["results"]["d g4"]["tokens_per_teacher_call"] == pytest.approx(
        3 * 16 / sum(o.num_rounds for o in calls))
