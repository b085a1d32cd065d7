"""Usage: python benchmarks/context-draft/context_draft_alpha.py [num_train] > results.json (log lines on stderr).

Could a draft that costs no network pass follow the photograph teacher? If the teacher, which nearly memorises its ten
photographs, predicted the next code from its grid neighbours, a table of counts would do: q(x | context) estimated
from teacher samples, with the context the code's position, its left and upper neighbours (then also the class and
the diagonal neighbours), interpolated down to coarser contexts (Witten-Bell: lambda = n / (n + u), n the
context's count, u its distinct next codes) and finally uniform. alpha = mean over held-out teacher samples and their
64 positions of sum_x min(p, q), the definition, against the shipped 1-layer draft on the same samples.
"""
import json, os, sys, time
import torch
from hf_specdec import VQGPTForCausalLM, plain_sample

torch.set_num_threads(2)
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "checkpoints", "photos")
num_train = int(sys.argv[1]) if len(sys.argv) > 1 else 32768
teacher = VQGPTForCausalLM.from_pretrained(f"{root}/teacher").eval()
draft = VQGPTForCausalLM.from_pretrained(f"{root}/draft-1L").eval()
K, W = teacher.config.codebook_size, teacher.config.grid_w


def teacher_samples(n, seed):
    prompts = teacher.class_prompt(torch.arange(n) % teacher.config.num_classes)
    g = torch.Generator().manual_seed(seed)
    return torch.cat([plain_sample(teacher, prompts[i:i + 512], generator=g) for i in range(0, n, 512)])


def neighbours(sequences):
    """Each code's context: class, position and neighbours (K = none, outside the grid)."""
    codes = sequences[:, 1:]
    M, T = codes.shape
    pos = torch.arange(T).expand(M, T)
    col, row = pos % W, pos // W

    def shifted(offset, outside):
        return torch.where(outside, K, torch.cat([torch.full((M, offset), K), codes[:, :-offset]], 1))

    return {"class": (sequences[:, :1] - sequences[:, :1].min()).expand(M, T), "pos": pos,
            "left": shifted(1, col == 0), "above": shifted(W, row == 0), "upleft": shifted(W + 1, (row == 0) | (col == 0)),
            "upright": shifted(W - 1, (row == 0) | (col == W - 1))}, codes


def key(context, names):
    k = torch.zeros_like(context["pos"])
    for name in names:
        k = k * (K + 1) + context[name]
    return k


def counts(train_context, train_codes, query_context, names):
    """Next-code counts `(M, T, K)` of each query's context among the training codes."""
    kt, kq = key(train_context, names).flatten(), key(query_context, names).flatten()
    unique, inverse = torch.unique(kq, return_inverse=True)
    index = torch.searchsorted(unique, kt).clamp(max=len(unique) - 1)
    hit = unique[index] == kt
    table = torch.zeros(len(unique), K)
    table.index_put_((index[hit], train_codes.flatten()[hit]), torch.ones(int(hit.sum())), accumulate=True)
    return table[inverse].view(*query_context["pos"].shape, K)


t0 = time.time()
train, held_out = teacher_samples(num_train, 11), teacher_samples(1024, 7)
print(f"sampled {num_train} + 1024 teacher samples in {time.time() - t0:.0f} s", file=sys.stderr)
with torch.no_grad():
    p = torch.softmax(teacher(held_out).logits[:, :-1].float(), -1)
    q_draft = torch.softmax(draft(held_out).logits[:, :-1].float(), -1)
out = {"teacher": "checkpoints/photos/teacher", "num_train_samples": num_train, "num_held_out": 1024,
       "draft-1L": torch.minimum(p, q_draft).sum(-1).mean().item(), "context_tables": []}
train_context, train_codes = neighbours(train)
query_context, _ = neighbours(held_out)
q = torch.full_like(p, 1.0 / K)
for names in (["pos"], ["pos", "left"], ["pos", "left", "above"], ["class", "pos", "left", "above"],
              ["class", "pos", "left", "above", "upleft"], ["class", "pos", "left", "above", "upleft", "upright"]):
    c = counts(train_context, train_codes, query_context, names)
    n, u = c.sum(-1, keepdim=True), (c > 0).sum(-1, keepdim=True).float()
    lam = n / (n + u).clamp(min=1e-9)
    q = torch.where(n > 0, lam * c / n.clamp(min=1) + (1 - lam) * q, q)
    out["context_tables"].append({"context": names, "alpha": torch.minimum(p, q).sum(-1).mean().item(),
                                  "seen_contexts": (n > 0).float().mean().item()})
out["mixtures_with_draft-1L"] = {str(w): torch.minimum(p, w * q + (1 - w) * q_draft).sum(-1).mean().item()
                                 for w in (0.1, 0.3, 0.5)}
print(json.dumps(out, indent=1))
