"""Distillation from a dense teacher (issue 25): a SASRec checkpoint teaches the generator and
the attention PRM what it knows about the next item, and ships nowhere.

Both students stay catalog-independent: the generator reads codes only, and the PRM's query
is its node's path (`model.prm_query: "path"`, `prm_attention.PathQuery`), so neither holds
a row per item or per trie node. The teacher's next-item distribution at a position is the
softmax of its logits over the items not yet seen at that position (the search never
recommends a seen item); a trie node's teacher mass is the sum over its items.

- Generator (`--distill W`): at every position and level, the KL from the teacher's
  distribution over the children of the target's true prefix (teacher forcing, like the
  generator's own loss) to the generator's level distribution, beside the usual next-code
  loss.
- PRM (`--prm-distill W`): at `--prm-positions` sampled positions per batch, on the
  generator's memory (detached: the PRM does not change the generator), a listwise soft
  cross-entropy at each level between the PRM's scores and the teacher's node masses over a
  candidate set shaped like the search's pool: every level-1 node; below, the children of
  the teacher's top parents (4 at level 2, 16 at level 3), filled up with random nodes of the
  level. So the PRM learns log-masses on one scale per level, the scale `cum` lives on, and
  `mix` in the runtime weighs the two.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .sasrec import SASRec

NEG = -1e9


class Teacher:
    """A frozen SASRec (sasrec.py) over the chunks of train.py's causal training."""

    def __init__(self, path, n_items, tau=1.0, max_len=200):
        self.m = SASRec(n_items, max_len=max_len)
        self.m.load_state_dict(torch.load(path))
        self.m.eval()
        for p in self.m.parameters():
            p.requires_grad_(False)
        self.L, self.n, self.tau = max_len, n_items, tau

    @torch.no_grad()
    def log_probs_at(self, x, mask, bi, pi):
        """The same as `log_probs(x, mask)[bi, pi]` [S,N], computing the logits and the
        seen mask only at the S positions (bi, pi)."""
        b, p = x.shape
        xt = torch.zeros(b, self.L, dtype=torch.long)
        xt[:, self.L - p:] = (x + 1) * (mask > 0).long()
        h = self.m.hidden(xt)[bi, self.L - p + pi]                          # [S,d]
        logits = h @ self.m.item.weight[1:].T / self.tau                    # [S,N]
        seen = torch.zeros_like(logits, dtype=torch.bool)
        upto = (torch.arange(p)[None, :] <= pi[:, None]) & (mask[bi] > 0)   # [S,P]
        seen[torch.arange(len(bi))[:, None].expand(-1, p)[upto], x[bi][upto]] = True
        return torch.log_softmax(logits.masked_fill(seen, NEG), -1)

    @torch.no_grad()
    def log_probs(self, x, mask):
        """x [B,P] item ids (train.Chunks.batch: left-padded, mask [B,P]) -> log-probs
        [B,P,N] of the next item over the items unseen up to each position (seen: -inf)."""
        b, p = x.shape
        xt = torch.zeros(b, self.L, dtype=torch.long)
        xt[:, self.L - p:] = (x + 1) * (mask > 0).long()
        logits = self.m(xt)[:, self.L - p:] / self.tau                     # [B,P,N]
        pos = torch.where(mask > 0, torch.arange(p)[None, :].expand(b, -1), torch.full((b, p), p))
        first = torch.full((b, self.n), p, dtype=torch.long)
        first.scatter_reduce_(1, x, pos, reduce="amin")                     # first position seen
        seen = first[:, None, :] <= torch.arange(p)[None, :, None]          # [B,P,N]
        return torch.log_softmax(logits.masked_fill(seen, NEG), -1)


class TrieIndex:
    """What the losses need of the trie, as tensors."""

    def __init__(self, trie, sids, cmax):
        from .beam import TrieTables
        self.L = trie.levels
        self.path = torch.from_numpy(trie.path.astype(np.int64))           # [N, L] node ids
        self.ls = [int(x) for x in trie.level_start]
        self.parent = torch.from_numpy(trie.parents().astype(np.int64))
        self.child = TrieTables(trie, cmax).child                          # [nodes, C], -1 = none

    def masses(self, pt, level):
        """pt [R,N] teacher probs -> the mass of every node of depth level+1 [R, n]."""
        lo, hi = self.ls[level + 1], self.ls[level + 2]
        return torch.zeros(pt.shape[0], hi - lo).index_add_(1, self.path[:, level] - lo, pt)


def generator_kl(logp, tlp, target, tri):
    """KL(teacher's distribution over the children of the true prefix || generator's level
    distribution), averaged over the levels: logp [B,P,L,C] (decode_all), tlp [B,P,N]
    teacher log-probs, target [B,P] item ids -> [B,P] (the caller weights by the mask)."""
    b, p, L, C = logp.shape
    pt = tlp.reshape(b * p, -1).exp()
    tpath = tri.path[target.reshape(-1)]                                    # [R,L]
    out = []
    for l in range(L):
        m = tri.masses(pt, l)                                               # [R, n_l]
        parent = tpath[:, l - 1] if l > 0 else torch.zeros(len(tpath), dtype=torch.long)
        ch = tri.child[parent]                                              # [R,C]
        q = torch.where(ch >= 0, m.gather(1, (ch - tri.ls[l + 1]).clamp(min=0)), torch.zeros(()))
        q = q / q.sum(-1, keepdim=True).clamp(min=1e-12)
        lq = torch.log(q.clamp(min=1e-12))
        out.append((q * (lq - logp[:, :, l, :].reshape(b * p, C))).sum(-1))
    return torch.stack(out, -1).mean(-1).reshape(b, p)


def node_log_mass(pt, tri, level):
    """pt [S,N] teacher probs -> log mass [S, nodes of depth level+1] (level 0-based)."""
    m = tri.masses(pt, level)
    return torch.log(m.clamp(min=1e-30)), m > 0


TOP_PARENTS = (0, 4, 16)   # per level: the teacher's top parents whose children are candidates
CANDIDATES = (32, 96, 64)  # per level: the candidate set's size (filled with random nodes)


def prm_distill_loss(prm, query, tri, mem, mask, tlp_at, rng_gen, positions):
    """The PRM's listwise distillation loss on `positions` sampled real positions of the
    batch: mem [B,P,d] (detached), mask [B,P], tlp_at(bi, pi) -> the teacher's log-probs
    [S,N] at those positions. Returns (loss, agreement), the agreement being the share of
    (position, level) where the PRM's top candidate is the teacher's."""
    b, p = mask.shape
    real = mask.reshape(-1).nonzero()[:, 0]
    pick = real[torch.randint(len(real), (min(positions, len(real)),), generator=rng_gen)]
    bi, pi = pick // p, pick % p
    mem_s = mem[bi]                                                         # [S,P,d]
    mask_s = mask[bi] * (torch.arange(p)[None, :] <= pi[:, None]).float()   # causal: rows <= p
    pt = tlp_at(bi, pi).exp()                                               # [S,N]
    total, agree = 0.0, []
    prev = None
    for level in range(tri.L):
        lm, valid = node_log_mass(pt, tri, level)
        lo, hi = tri.ls[level + 1], tri.ls[level + 2]
        n = hi - lo
        r = torch.rand(len(pick), n, generator=rng_gen)
        if level > 0 and TOP_PARENTS[level] > 0:
            top = prev.topk(min(TOP_PARENTS[level], prev.shape[1]), dim=1).indices + tri.ls[level]
            par = tri.parent[lo:hi]                                         # [n]
            child_of_top = (par[None, :, None] == top[:, None, :]).any(-1)  # [S,n]
            r = r + 2.0 * child_of_top
        r = torch.where(valid, r, torch.full_like(r, -1.0))
        k = min(CANDIDATES[level], n)
        cand = r.topk(k, dim=1).indices                                     # [S,k] level-local
        ok = valid.gather(1, cand)
        target = torch.softmax(lm.gather(1, cand).masked_fill(~ok, NEG), -1)
        s = prm.score_query(mem_s, mask_s, query(cand + lo)).masked_fill(~ok, NEG)
        total = total - (target * torch.log_softmax(s, -1)).sum(-1).mean()
        agree.append((s.argmax(1) == target.argmax(1)).float().mean().item())
        prev = lm
    return total / tri.L, agree
