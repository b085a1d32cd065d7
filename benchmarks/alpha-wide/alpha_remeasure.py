"""Usage: python benchmarks/alpha-wide/alpha_remeasure.py 4096 > results.json (the log lines first).

alpha = E[sum_x min(p, q)] on fresh teacher samples (seed 2026, classes in turn), written here from the definition
(not the project's expected_acceptance), for feature-2L and feature-2L-wide on the same samples: the first draft step
(teacher features of the slot before, as after a verify pass)."""
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
drafts = {name: VQGPTFeatureDraft.from_pretrained(f"{root}/{name}", teacher=teacher).eval()
          for name in ("feature-2L", "feature-2L-wide")}
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
diff = torch.cat(sums["feature-2L-wide"]) - torch.cat(sums["feature-2L"])
out["wide_minus_narrow"] = {"mean": diff.mean().item(), "stderr": (diff.std() / len(diff) ** 0.5).item()}
print(json.dumps(out, indent=1))
