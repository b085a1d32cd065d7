"""The shared Accelerate loop: 2-process DDP on the CPU, kill -9 and resume, and the seed's sanity checks
(tokenizer reconstruction, teacher overfit, distillation raising acceptance), plus the scripts end to end."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from hf_specdec import VQGPTForCausalLM
from hf_specdec.cli import parse_args
from hf_specdec.distill import DistillArguments, expected_acceptance, make_student, sample_sequences
from hf_specdec.distill.distill import distillation_loss
from hf_specdec.pipeline import class_prompts
from hf_specdec.training import TrainingArguments, list_checkpoints, train
from tests.utils import ROOT, python_env, run_python, script_main, tiny_model

WORKER = str(ROOT / "tests" / "helpers" / "train_worker.py")


def read_log(path):
    steps = {}
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        steps[record["step"]] = record["batch"]  # a resumed run rewrites the steps after its checkpoint
    return steps


def launch_two_processes(*args, timeout=300) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes 2 ...` on the CPU (gloo), started as `python -m` with this
    interpreter (not an `accelerate` found on PATH), on a port chosen free for this run (`--main_process_port 0`): a
    fixed port (29500, Accelerate's default) is shared with any other run on the machine at the same time."""
    env = python_env(ACCELERATE_USE_CPU="1")
    command = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no", *args]
    return run_python(command, env=env, timeout=timeout)


def test_two_processes_really_train_together(tmp_path):
    result = launch_two_processes(WORKER, tmp_path, 6, 0)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"params-rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and "MULTI_CPU" in r["distributed_type"] for r in ranks)
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # gradients were all-reduced
    batches = [read_log(tmp_path / f"batches-rank{r}.jsonl") for r in (0, 1)]
    assert set(batches[0]) == set(range(6)) and batches[0] != batches[1]  # each rank saw its own shard
    # and drew its own dropout: one random stream on every rank gave both ranks' micro-batches the same masks
    noise = [[json.loads(line)["noise"] for line in (tmp_path / f"batches-rank{r}.jsonl").read_text().splitlines()]
             for r in (0, 1)]
    assert len(noise[0]) == len(noise[1]) == 6 and all(a != b for a, b in zip(*noise))


def test_two_processes_train_one_tokenizer(tmp_path):
    """The tokenizer's loss ran `unwrap_model(model).reconstruct`, a forward past DDP's wrapper: no gradient was
    all-reduced, each rank trained its own model on half the data, and rank 0's was saved."""
    result = launch_two_processes(ROOT / "tests" / "helpers" / "tokenizer_worker.py", tmp_path, 3)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"tokenizer-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]


def _micro_batches_per_step(tmp_path, resume=None, fail_at=None, max_steps=6, accumulation=3):
    """A 1-process run on 40 examples of batch 4 (10 micro-batches an epoch, not a multiple of `accumulation`):
    the micro-batches (by their first example) of each optimizer step, and the final weights."""
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=max_steps, save_every=2, per_device_batch_size=4,
                             gradient_accumulation_steps=accumulation, warmup_steps=1, eval_every=0, log_every=1,
                             learning_rate=1e-3, resume_from_checkpoint=resume, seed=0)
    torch.manual_seed(0)
    model = tiny_model(grid_h=2, grid_w=2)
    data = [torch.tensor([model.config.codebook_size + i % 3, i % 5, (i // 5) % 5, i % 7, 1]) for i in range(40)]
    steps = {}

    def loss_fn(model, ids, step):
        if step == fail_at:
            raise RuntimeError("killed")
        steps.setdefault(step, []).append(int(ids[0, 3]) * 100 + int(ids[0, 1]) * 10 + int(ids[0, 2]))
        return model(ids, labels=ids, use_cache=False).loss, {}

    trained = train(model, data, loss_fn, args, collate_fn=torch.stack)
    return steps, [p.detach().clone() for p in trained.parameters()]


def test_accumulation_carries_over_the_end_of_an_epoch_and_resumes_there(tmp_path):
    """Accelerate closes an accumulation at the end of the dataloader by default: the 4th step held 1 micro-batch (10
    = 3 + 3 + 3 + 1) with its loss still divided by 3, and a resumed run restarted at another place in the data."""
    steps, straight = _micro_batches_per_step(tmp_path / "straight")
    assert sorted(steps) == list(range(6)) and all(len(batches) == 3 for batches in steps.values())
    with pytest.raises(RuntimeError, match="killed"):
        _micro_batches_per_step(tmp_path / "resumed", fail_at=5)  # dies after its checkpoint at step 4
    resumed_steps, resumed = _micro_batches_per_step(tmp_path / "resumed", resume="latest")
    assert sorted(resumed_steps) == [4, 5] and all(resumed_steps[s] == steps[s] for s in (4, 5))
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))


def test_resuming_on_another_number_of_processes_is_refused(tmp_path):
    from hf_specdec.training.trainer import check_resumable

    _micro_batches_per_step(tmp_path, max_steps=2, accumulation=1)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, save_every=2, per_device_batch_size=4,
                             warmup_steps=1, learning_rate=1e-3, resume_from_checkpoint="latest", seed=0)
    assert check_resumable(args, None, 40, 1).endswith("checkpoint-2")
    with pytest.raises(ValueError, match=r"written by a run on 1 process\(es\), this one has 2: resume with "
                                         "`accelerate launch --num_processes 1`"):
        check_resumable(args, None, 40, 2)
    with pytest.raises(ValueError, match="x `gradient_accumulation_steps` 1 on each of 16 processes is more than one "
                                         "epoch of 40 examples"):
        check_resumable(TrainingArguments(output_dir=str(tmp_path / "new"), per_device_batch_size=4), None, 40, 16)


def test_kill_and_resume_continues_exactly(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert run_python([WORKER, reference, 24, 8], timeout=300).returncode == 0

    process = subprocess.Popen([sys.executable, WORKER, str(killed), "24", "8", "", "0.25"], env=python_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        log = killed / "batches-rank0.jsonl"
        if (killed / "checkpoints" / "checkpoint-8").exists() and log.exists() and len(log.read_text().splitlines()) >= 11:
            break
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "params-rank0.json").exists()  # it really died mid-run
    checkpoints = list_checkpoints(str(killed / "checkpoints"))
    assert [Path(c).name for c in checkpoints] == ["checkpoint-8"]
    from safetensors.torch import load_file

    assert load_file(os.path.join(checkpoints[0], "model.safetensors"))  # intact

    result = run_python([WORKER, killed, 24, 8, "resume"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from" in result.stdout + result.stderr and "at step 8" in result.stdout + result.stderr
    assert read_log(killed / "batches-rank0.jsonl") == read_log(reference / "batches-rank0.jsonl")  # same data order
    final = json.loads((killed / "params-rank0.json").read_text())["checksum"]
    assert final == pytest.approx(json.loads((reference / "params-rank0.json").read_text())["checksum"], rel=1e-9)


def test_sharded_optimizer_state_resumes_exactly(tmp_path):
    """FSDP2 on 2 CPU processes: the checkpoint holds the full (gathered) optimizer state, not rank 0's shard, and a
    fresh sharded model resumes from it bit for bit; a resume that loses the optimizer state does not (control); the
    final model is saved whole.

    Accelerate does not set up FSDP on the CPU (a CPU run is MULTI_CPU, i.e. DDP), so the worker shards with torch's
    `fully_shard` as Accelerate's FSDP2 plugin does on GPUs; the checkpoint code runs unchanged."""
    worker = ROOT / "tests" / "helpers" / "fsdp_checkpoint_worker.py"
    result = run_python(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", worker, tmp_path],
                        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["sharded"] == {"type": "DTensor", "local_rows": 10, "rows": 20}  # really sharded across the 2 ranks
    assert r["step"] == 4
    for name, shape in r["param_shapes"].items():  # every parameter's moments, whole
        assert r["saved_shapes"][f"{name}/exp_avg"] == shape and r["saved_shapes"][f"{name}/exp_avg_sq"] == shape
    assert r["resumed"] == r["straight"]
    assert r["weights_only"] != pytest.approx(r["straight"], rel=1e-6)
    assert r["final"]["plain"] and r["final"]["checksum"] == pytest.approx(r["straight"], rel=1e-12)  # saved whole


def test_damaged_checkpoints_are_named_and_latest_skips_them(tmp_path):
    from hf_specdec.training import resolve_checkpoint
    from tests.utils import truncate

    model = tiny_model(0)
    batch = torch.cat([16 + torch.arange(4)[:, None] % 3, torch.randint(0, 16, (4, 16))], dim=1)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_batch_size=4, eval_every=0,
                             save_every=2, log_every=1, checkpoints_total_limit=3)
    loss = lambda m, ids, s: (m(ids, labels=ids, use_cache=False).loss, {})  # noqa: E731
    train(model, list(batch), loss, args, collate_fn=torch.stack)
    checkpoints = tmp_path / "checkpoints"
    assert [Path(c).name for c in list_checkpoints(str(checkpoints))] == ["checkpoint-2", "checkpoint-4"]
    truncate(checkpoints / "checkpoint-4" / "model.safetensors")

    with pytest.warns(UserWarning, match=r"checkpoint-4.*model\.safetensors.*Resuming from .*checkpoint-2"):
        assert resolve_checkpoint("latest", str(checkpoints)).endswith("checkpoint-2")
    with pytest.raises(ValueError, match=r"resume_from_checkpoint.*checkpoint-4.*model\.safetensors"):
        resolve_checkpoint(str(checkpoints / "checkpoint-4"), str(checkpoints))
    with pytest.warns(UserWarning, match="checkpoint-4"):  # and the run itself resumes from step 2 and finishes
        train(tiny_model(1), list(batch), loss, TrainingArguments(**{**vars(args), "resume_from_checkpoint": "latest"}),
              collate_fn=torch.stack)
    with pytest.raises(ValueError, match="resume_from_checkpoint.*does not fit"):  # a checkpoint of another model
        train(tiny_model(0, hidden_size=64), list(batch), loss,
              TrainingArguments(**{**vars(args), "resume_from_checkpoint": str(checkpoints / "checkpoint-4")}),
              collate_fn=torch.stack)
    (checkpoints / "checkpoint-2" / "optimizer.json").write_text("{")
    truncate(checkpoints / "checkpoint-4" / "model.safetensors")
    with pytest.raises(ValueError, match=r"every checkpoint.*optimizer\.json"):
        resolve_checkpoint("latest", str(checkpoints))


def test_resuming_with_other_settings_is_refused_before_any_step(tmp_path):
    """The saved optimizer state carries the learning rate and the data order follows the batch size and seed: a
    resumed run that asks for other values would silently get the checkpoint's (or a mixed run), so it is refused,
    as is another loss, data set or model setting of the script's dataclasses; `max_steps` may grow but not fall
    below the checkpoint's step."""
    batch = torch.cat([16 + torch.arange(8)[:, None] % 3, torch.randint(0, 16, (8, 16))], dim=1)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_batch_size=4, eval_every=0,
                             save_every=2, log_every=1, learning_rate=1e-3)
    calls = []

    def loss(model, ids, step):
        calls.append(step)
        return model(ids, labels=ids, use_cache=False).loss, {}

    run = {"distill": {"loss": "tv", "lmbda": 0.0, "teacher_layers": [0, 2], "teacher_path": "/old/teacher"},
           "data": {"dataset": "digits", "data_dir": None}}
    train(tiny_model(0), list(batch), loss, args, collate_fn=torch.stack, run_config=run)
    state = json.loads((tmp_path / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["settings"]["learning_rate"] == 1e-3 and state["settings"]["per_device_batch_size"] == 4
    assert state["settings"]["distill.loss"] == "tv" and "distill.teacher_path" not in state["settings"]
    calls.clear()
    for other_run, match in [({**run, "distill": {**run["distill"], "loss": "hybrid"}}, r"`loss` 'hybrid' \(the checkpoint's: 'tv'\)"),
                             ({**run, "distill": {**run["distill"], "teacher_layers": (0, 3)}}, r"`teacher_layers` \[0, 3\]"),
                             ({**run, "data": {"dataset": "photos"}}, r"`dataset` 'photos'")]:
        resumed = TrainingArguments(**{**vars(args), "max_steps": 6, "resume_from_checkpoint": "latest"})
        with pytest.raises(ValueError, match=match):
            train(tiny_model(0), list(batch), loss, resumed, collate_fn=torch.stack, run_config=other_run)
    for change, match in [({"learning_rate": 1e-2}, r"`learning_rate` 0\.01 \(the checkpoint's: 0\.001\)"),
                          ({"per_device_batch_size": 2, "seed": 7}, r"`per_device_batch_size` 2 .*`seed` 7"),
                          ({"max_steps": 2}, r"`max_steps` 2 is below the step .* \(4\)")]:
        resumed = TrainingArguments(**{**vars(args), "max_steps": 6, **change, "resume_from_checkpoint": "latest"})
        with pytest.raises(ValueError, match=match):
            train(tiny_model(0), list(batch), loss, resumed, collate_fn=torch.stack, run_config=run)
    assert calls == []  # refused before any step
    moved = {**run, "distill": {**run["distill"], "teacher_path": "/new/teacher"}, "data": {**run["data"], "data_dir": "x"}}
    train(tiny_model(0), list(batch), loss, TrainingArguments(**{**vars(args), "max_steps": 6,
                                                                 "resume_from_checkpoint": "latest"}), collate_fn=torch.stack,
          run_config=moved)  # folders may move between runs
    assert len(calls) == 2  # steps 5 and 6 only

    # a checkpoint written before the settings were recorded is compared by step only
    state = json.loads((tmp_path / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    del state["settings"]
    (tmp_path / "checkpoints" / "checkpoint-6" / "trainer_state.json").write_text(json.dumps(state))
    train(tiny_model(0), list(batch), loss, TrainingArguments(**{**vars(args), "max_steps": 7, "seed": 3,
                                                                 "resume_from_checkpoint": "latest"}), collate_fn=torch.stack)


def test_teacher_overfits_one_small_batch(tmp_path):
    """The seed's verify_teacher.py: a tiny teacher must drive the loss on one batch close to zero."""
    model = tiny_model(0, num_hidden_layers=2)
    g = torch.Generator().manual_seed(0)
    batch = torch.cat([16 + torch.arange(4)[:, None] % 3, torch.randint(0, 16, (4, 16), generator=g)], dim=1)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=150, per_device_batch_size=4, learning_rate=3e-3,
                             warmup_steps=10, weight_decay=0.0, eval_every=0, save_every=0, log_every=50)
    trained = train(model, list(batch), lambda m, ids, s: (m(ids, labels=ids, use_cache=False).loss, {}), args,
                    collate_fn=torch.stack)
    with torch.no_grad():
        assert trained.eval()(batch, labels=batch, use_cache=False).loss.item() < 0.05
    assert VQGPTForCausalLM.from_pretrained(tmp_path).num_parameters() == trained.num_parameters()


def test_batch_fn_rebuilds_the_batch_before_the_loss_without_gradients(tmp_path):
    """On-policy samples are drawn before the loss (as in TRL's GKD trainer), not inside it under autocast."""
    model = tiny_model(0)
    batch = torch.cat([16 + torch.arange(4)[:, None] % 3, torch.randint(0, 16, (4, 16))], dim=1)
    seen = []

    def batch_fn(unwrapped, ids, step):
        seen.append(("batch", torch.is_grad_enabled(), unwrapped is model, ids.flip(0).tolist()))
        return ids.flip(0), {}

    def loss_fn(m, ids, step):
        seen.append(("loss", torch.is_grad_enabled(), ids.tolist()))
        return m(ids, labels=ids, use_cache=False).loss, {}

    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_batch_size=4, eval_every=0,
                             save_every=0, log_every=1)
    train(model, list(batch), loss_fn, args, collate_fn=torch.stack, batch_fn=batch_fn)
    assert [s[0] for s in seen] == ["batch", "loss", "batch", "loss"]
    assert seen[0][1:3] == (False, True) and seen[1][1]
    assert seen[1][2] == seen[0][3]  # the loss saw the rebuilt (flipped) batch


@pytest.mark.parametrize("loss", ["hybrid", "tv", "forward_kl"])
def test_distillation_raises_expected_acceptance(loss):
    teacher = tiny_model(0, num_hidden_layers=3)
    with torch.no_grad():
        teacher.lm_head.weight.mul_(0.5)  # a teacher with some entropy, like image tokens
    teacher.requires_grad_(False)
    student = make_student(teacher, 1, init=False)
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (256,))
    data = sample_sequences(teacher, class_prompts(teacher, labels), seed=0)
    held_out = sample_sequences(teacher, class_prompts(teacher, labels[:64]), seed=1)
    before = expected_acceptance(teacher, student, held_out)["alpha"]
    args = DistillArguments(student_layers=1, loss=loss, gen_temperature=1.0)
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    for step in range(120):
        ids = data[(step * 32) % 256 : (step * 32) % 256 + 32]
        loss_value = distillation_loss(args, teacher, student.train(), ids)
        optimizer.zero_grad()
        loss_value.backward()
        optimizer.step()
    after = expected_acceptance(teacher, student.eval(), held_out)
    assert after["alpha"] > before + 0.1, (before, after["alpha"])
    assert after["alpha_by_position"].shape == (teacher.config.num_image_tokens,)


def test_student_initialised_from_teacher_layers():
    teacher = tiny_model(0, num_hidden_layers=4)
    student = make_student(teacher, 2, teacher_layers=[0, 3])
    assert torch.equal(student.transformer.h[1].attn.c_attn.weight, teacher.transformer.h[3].attn.c_attn.weight)
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)
    default = make_student(teacher, 2)
    assert torch.equal(default.transformer.h[0].mlp.c_fc.weight, teacher.transformer.h[0].mlp.c_fc.weight)
    with pytest.raises(ValueError, match="teacher_layers"):
        make_student(teacher, 2, teacher_layers=[0, 9])


def test_wider_student_starts_as_the_narrow_one_and_trains_its_extra_units():
    """`intermediate_size` wider than the teacher's: the copied block computes what the teacher's block computes (extra
    units' outputs at zero), yet those units get gradients; narrower than the block it starts from is refused."""
    teacher = tiny_model(0, num_hidden_layers=4)
    narrow, wide = make_student(teacher, 2).eval(), make_student(teacher, 2, intermediate_size=160).train()
    assert wide.config.intermediate_size == 160 and narrow.config.intermediate_size == teacher.config.intermediate_size
    ids = torch.cat([teacher.class_prompt([0, 2]), torch.randint(0, 16, (2, 16))], dim=1)
    torch.testing.assert_close(wide.eval()(ids, use_cache=False).logits, narrow(ids, use_cache=False).logits)
    wide(ids, labels=ids, use_cache=False).loss.backward()
    extra = wide.transformer.h[0].mlp.c_proj.weight.grad[:, teacher.config.intermediate_size:]
    assert extra.abs().sum() > 0
    with pytest.raises(ValueError, match="intermediate_size"):
        make_student(teacher, 2, intermediate_size=8)
    with pytest.raises(ValueError, match="draft_intermediate_size"):
        DistillArguments(student_preset="draft-1L", draft_intermediate_size=0)


def test_arguments_from_yaml_and_command_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("student_id: 4\nloss: tv\nmax_steps: 7\n")
    distill, training = parse_args((DistillArguments, TrainingArguments), [str(config), "--max_steps", "9"])
    assert (distill.student_id, distill.loss, training.max_steps) == (4, "tv", 9)
    config.write_text("student_id: 4\nnot_a_field: 1\n")
    with pytest.raises(ValueError, match="not_a_field"):
        parse_args((DistillArguments, TrainingArguments), [str(config)])
    with pytest.raises(ValueError, match="student_id"):
        DistillArguments(student_id=7)
    with pytest.raises(ValueError, match="lmbda"):
        DistillArguments(student_layers=1, lmbda=1.5)
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainingArguments(mixed_precision="fp8")


def test_pipeline_scripts_end_to_end(tmp_path, monkeypatch, capsys):
    """train_vqvae -> precompute_tokens -> train_teacher -> distill (hybrid and on-policy) with tiny settings, each
    script's `main(argv)` called in this process (a subprocess per script adds only imports)."""
    monkeypatch.chdir(ROOT)
    common = ["--resolution", "16", "--token_cache_dir", tmp_path / "cache", "--log_every", "5", "--save_every", "0"]
    vq = tmp_path / "vq"
    script_main("train_vqvae.py")(["configs/vqvae/digits.yaml", *common, "--output_dir", vq, "--max_steps", "8",
                                   "--block_out_channels", "32", "32", "--codebook_size", "64",
                                   "--per_device_batch_size", "32", "--eval_every", "4"])
    with Image.open(vq / "reconstructions.png") as picture:
        assert picture.size[0] > 16
    capsys.readouterr()
    script_main("precompute_tokens.py")(["configs/data/digits.yaml", "--resolution", "16", "--token_cache_dir",
                                         tmp_path / "cache", "--tokenizer_path", vq])
    assert "train: 1437 images" in capsys.readouterr().out
    teacher = tmp_path / "teacher"
    script_main("train_teacher.py")(["configs/teacher/digits.yaml", *common, "--tokenizer_path", vq, "--output_dir",
                                     teacher, "--max_steps", "6", "--hidden_size", "32", "--preset", "student-4L",
                                     "--eval_every", "3"])
    metrics = json.loads((teacher / "training_metrics.json").read_text())
    assert metrics["val_perplexity"] < 64  # below a uniform guess over the codebook
    names = VQGPTForCausalLM.from_pretrained(teacher).config.id2label  # the class names label sample grids
    assert [names[i] for i in range(10)] == [str(d) for d in range(10)]
    from hf_specdec import VQTokenizer
    from hf_specdec.pipeline import weights_fingerprint

    recorded = VQGPTForCausalLM.from_pretrained(teacher).config.tokenizer_fingerprint  # decoding with another refused
    assert recorded == weights_fingerprint(VQTokenizer.from_pretrained(vq)) is not None
    for extra in (["--student_id", "4", "--loss", "hybrid"],
                  ["--student_preset", "draft-1L", "--loss", "tv", "--lmbda", "0.5", "--data_source", "teacher",
                   "--num_teacher_samples", "64"]):
        student = tmp_path / ("student" + extra[1])
        script_main("distill.py")(["configs/distill/digits.yaml", *common, "--teacher_path", teacher,
                                   "--tokenizer_path", vq, "--output_dir", student, "--max_steps", "4",
                                   "--eval_every", "2", "--num_alpha_prefixes", "16", *extra])
        result = json.loads((student / "distill_metrics.json").read_text())
        assert 0.0 < result["alpha"] <= 1.0
        assert VQGPTForCausalLM.from_pretrained(student).config.codebook_size == 64


def test_tokenizer_training_reconstructs_digits(tmp_path):
    """The seed's verify_vqvae.py: after a short training the tokenizer reconstructs held-out digits well."""
    from hf_specdec.data import DataArguments, images_to_tensor
    from hf_specdec.training.tokenizer import TokenizerArguments, psnr, train_tokenizer

    data = DataArguments(resolution=16)
    model_args = TokenizerArguments(codebook_size=64, block_out_channels=[32, 32], latent_channels=16, vq_embed_dim=16)
    images = images_to_tensor(data.load()["test"][:128]["image"], 16)
    torch.manual_seed(0)
    with torch.no_grad():
        untrained = model_args.build(16).eval()
        before = psnr(untrained.reconstruct(images)[0], images)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=80, per_device_batch_size=32, learning_rate=2e-3,
                             warmup_steps=5, eval_every=0, save_every=0, log_every=20)
    tokenizer = train_tokenizer(data, model_args, args).eval()
    with torch.no_grad():
        reconstruction, _, codes = tokenizer.reconstruct(images)
    after = psnr(reconstruction, images)
    assert after > 20.0 and after > before + 8.0, (before, after)
    assert tokenizer.codebook_usage(codes)["usage"] > 0.2  # the EMA restarts keep codes alive
    assert (tmp_path / "reconstructions.png").exists()


def test_precision_and_trackers_are_checked_before_training_and_wandb_logs_under_output_dir(tmp_path, monkeypatch):
    from accelerate.state import AcceleratorState

    import hf_specdec.training.trainer as trainer

    reset = lambda: AcceleratorState._reset_state(reset_partial_state=True)  # noqa: E731
    reset()
    try:
        if not torch.cuda.is_available():  # Accelerate took fp16 on the CPU and trained in float32 without a word
            with pytest.raises(ValueError, match="`mixed_precision` fp16 needs a GPU"):
                trainer.make_accelerator(TrainingArguments(output_dir=str(tmp_path / "a"), mixed_precision="fp16"))
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision` sets
        assert trainer.make_accelerator(TrainingArguments(output_dir=str(tmp_path / "a"))).mixed_precision == "bf16"
        reset()
        given = TrainingArguments(output_dir=str(tmp_path / "a"), mixed_precision="no")  # the option wins
        assert trainer.make_accelerator(given).mixed_precision == "no"
    finally:
        reset()
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    monkeypatch.setattr(trainer, "is_tensorboard_available", lambda: False)
    with pytest.raises(ValueError, match="`report_to` tensorboard needs the tensorboard package"):
        TrainingArguments(output_dir=str(tmp_path / "a"), report_to="tensorboard")  # Accelerate only warned
    with pytest.warns(UserWarning, match=r"`warmup_steps` \(50\) > `max_steps` \(2\): .* only 4% of it"):
        TrainingArguments(output_dir=str(tmp_path / "a"), max_steps=2, warmup_steps=50)
    with warnings.catch_warnings():  # equal: the last step runs at the peak (it said "only 100% of it")
        warnings.simplefilter("error")
        TrainingArguments(output_dir=str(tmp_path / "a"), max_steps=2, warmup_steps=2)

    # wandb wrote its run folder to ./wandb in the current directory, not next to the run's model
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    batch = torch.cat([16 + torch.arange(4)[:, None] % 3, torch.randint(0, 16, (4, 16))], dim=1)
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=1, warmup_steps=0, per_device_batch_size=4,
                             eval_every=0, save_every=0, log_every=1, report_to="wandb")
    train(tiny_model(0), list(batch), lambda m, ids, s: (m(ids, labels=ids, use_cache=False).loss, {}), args,
          collate_fn=torch.stack)
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*")) and not (tmp_path / "cwd" / "wandb").exists()


@pytest.mark.parametrize("settings, words", [
    (dict(loss="tv", alpha=0.3), "`alpha` is read only with `loss` hybrid, got loss 'tv'"),
    (dict(loss="tv", kd_temperature=5.0), "`kd_temperature` is read only with `loss` hybrid"),
    (dict(loss="hybrid", beta=0.3), "`beta` is read only with `loss` jsd"),
    (dict(loss="hybrid", kl_weight=0.1), "`kl_weight` is read only with `loss` forward_kl or reverse_kl or jsd or tv"),
    (dict(loss="tv", init_from_teacher=False, teacher_layers=[5]), "`teacher_layers` .* `init_from_teacher` is false"),
    # checked after the teacher had loaded before: what needs no model, now with the arguments
    (dict(gen_top_k=0), "`gen_top_k` must be a positive integer or None"),
    (dict(teacher_layers=[0, 3]), "`teacher_layers` must list 1 indices, one per student layer"),
    (dict(loss="tv", feature_draft=True, feature_layers=[-1, 5]), "`feature_layers` must be a non-empty list of layer indices >= 0"),
])
def test_distillation_settings_the_loss_does_not_read_are_refused(settings, words):
    """They were ignored: the user believed, e.g., a temperature of 5 shaped a total-variation loss."""
    with pytest.raises(ValueError, match=words):
        DistillArguments(student_layers=1, **settings)
    DistillArguments(student_layers=1, loss="jsd", beta=0.3, kl_weight=0.1)  # both read by jsd
