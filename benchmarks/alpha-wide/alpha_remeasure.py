"""Usage: python benchmarks/alpha-wide/alpha_remeasure.py 4096 [name=folder ...] > results.json (the log lines first).

alpha = E[sum_x min(p, q)] on fresh teacher samples (seed 2026, classes in turn), written here from the definition
(not the project's expected_acceptance), for feature drafts of the digits teacher on the same samples (default
feature-2L and feature-2L-wide; `name=folder` pairs instead, the first is the reference of the paired differences):
the first draft step (teacher features of the slot before, as after a verify pass)."""
import json, os, sys, time, torch
from hf_specdec import VQGPTForCausalLM, VQGPTFeatureDraft, plain_sample
torch.set_num_threads(1)
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "checkpoints", "digits")
N = int(sys.argv[1])
teacher = VQGPTForCausalLM.from_pretrained(f"{root}/teacher").eval()
prompts = teacher.class_prompt(torch.arange(N) % teacher.config.num_classes)
g = torch.Generator().manual_seed(2026)
t0 = time.time()
seqs = torch.cat([plain_sample(teacher, prompts[i:i + 512], generator=g) for i in range(0, N, 512)])
print("sampled", tuple(seqs.shape), round(time.time() - t0), "s", flush=True)
out = {"num_sequences": N, "seed": 2026, "estimator": "mean over samples and 64 positions of sum_x min(p, q)"}
folders = dict(arg.split("=", 1) for arg in sys.argv[2:]) or {n: f"{root}/{n}" for n in ("feature-2L", "feature-2L-wide")}
drafts = {name: VQGPTFeatureDraft.from_pretrained(folder, teacher=teacher).eval() for name, folder in folders.items()}
sums = {name: [] for name in drafts}
with torch.no_grad():
    for i in range(0, N, 256):
        ids = seqs[i:i + 256]
        p = torch.softmax(teacher(ids).logits[:, :-1].float(), -1)
        for name, draft in drafts.items():
            q = torch.softmax(draft(ids).logits[:, :-1].float(), -1)
            assert p.shape == q.shape, (p.shape, q.shape)
            sums[name].append(torch.minimum(p, q).sum(-1).mean(1))  # per sequence
for name in drafts:
    per_seq = torch.cat(sums[name])
    out[name] = {"alpha": per_seq.mean().item(), "stderr": (per_seq.std() / len(per_seq) ** 0.5).item()}
first, *others = drafts
for name in others:
    diff = torch.cat(sums[name]) - torch.cat(sums[first])
    key = "wide_minus_narrow" if (first, name) == ("feature-2L", "feature-2L-wide") else f"{name}_minus_{first}"
    out[key] = {"mean": diff.mean().item(), "stderr": (diff.std() / len(diff) ** 0.5).item()}
print(json.dumps(out, indent=1))
