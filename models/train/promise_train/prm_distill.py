"""The attention PRM distilled from a dense teacher (issue 25), on a frozen generator.

The PRM is the paper's verifier with nothing that grows with the catalog: its query is the
node's path (`model.prm_query: "path"`: a sum of per-level code rows, `prm_attention.
PathQuery`), one block of cross-attention over the generator's memory and an FFN, an MLP
to one logit. It learns, listwise at every level, the teacher's log-mass of each candidate
prefix (the teacher's probability of the next item summed over the prefix's unseen items;
distill.py), over candidate sets shaped like the search's pools. The teacher (a SASRec
checkpoint) ships nowhere.

The generator's causal memory serves every position of a training chunk in one pass, so a
step samples `--positions` positions from a few chunks: far more training signal per
second than the on-policy pools of prm_attention.py (a beam search per window).

Validation every `--eval-every` steps: the PRM-guided search in torch
(experiments/eval_prm.py's `search`) on `--valid-users` examples spread over the
validation split at K'=4, K+=16 and mix 0.5 (the mean of its Recall@N and that at K'=16,
K+=64 is the selection metric, N = --results); the best checkpoint by it is kept. Resumable: WORK/<out>.ckpt.

python -m promise_train prm-distill --work checkpoints --data ../../data --gen small_s200 \
    --teacher sasrec_teacher.pt --out small_s200_prmkd
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from . import beam as beam_mod
from . import log as log_mod
from . import distill as distill_mod
from .model import PRM, enc_table, load_trained
from .prm_attention import PathQuery
from .train import Chunks
from .trie import Trie


@torch.no_grad()
def guided_recall(gen, prm, query, tables, pairs, sids_t, grid, mix, results):
    """Recall@N of the PRM-guided search over the validation `pairs`, per (K', K+) of
    `grid`: experiments/eval_prm.py's search (pool by cum, then the mixed key). A pair whose
    history or target the catalog does not know is a miss."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments"))
    from eval_prm import evaluate   # noqa: E402  (the one torch PRM-guided search)
    prm.eval()
    rows = [(h, t) for h, t in pairs if h and t >= 0]
    share = len(rows) / max(len(pairs), 1)
    out = {f"{k}/{c}": round(share * evaluate(gen, prm, query, tables, rows, sids_t, k, c, mix, results)[0], 4)
           for k, c in grid}
    prm.train()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--data", default="data")
    ap.add_argument("--gen", required=True, help="the frozen generator (WORK/<gen>.pt and .json)")
    ap.add_argument("--teacher", required=True, help="a SASRec state dict in WORK (sasrec.py's <name>_best.pt)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tau", type=float, default=1.0)
    ap.add_argument("--prm-heads", type=int, default=4)
    ap.add_argument("--prm-ff", type=int, default=128)
    ap.add_argument("--positions", type=int, default=128, help="positions sampled per step")
    ap.add_argument("--chunk-targets", type=int, default=1024, help="padded positions encoded per step")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--eval-every", type=int, default=1500)
    ap.add_argument("--valid-users", type=int, default=1000,
                    help="validate on N examples spread over the validation split (0 = all)")
    ap.add_argument("--log", default=None, help="a split log (promise_train log --out) instead of ML-1M")
    ap.add_argument("--results", type=int, default=10, help="N of the selection metric's Recall@N")
    ap.add_argument("--mix", type=float, default=0.5, help="the mix of the selection metric's search")
    ap.add_argument("--patience", type=int, default=4, help="evaluations without a new best before stopping")
    ap.add_argument("--minutes", type=float, default=150)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--curve-dir", default="../results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, info = load_trained(args.work, args.gen)
    cfg = model.cfg
    cfg.prm_heads, cfg.prm_ff, cfg.prm_head, cfg.prm_kind = args.prm_heads, args.prm_ff, "mlp", "attention"
    model.prm = PRM(cfg)
    gen, prm = model.gen.eval(), model.prm
    for p in gen.parameters():
        p.requires_grad_(False)
    train_seqs, valid_pairs, n_items = log_mod.training_split(args.data, args.log)
    valid_pairs = log_mod.spread(valid_pairs, args.valid_users)
    sids = np.load(os.path.join(args.work, info.get("sids", "sids.npy")))
    if len(sids) != n_items:
        raise SystemExit(f"the generator's SIDs hold {len(sids)} items, the data {n_items}: not the same catalog")
    trie = Trie(sids)
    tables = beam_mod.TrieTables(trie, cfg.cmax)
    query = PathQuery(trie, cfg.cmax, cfg.d)
    teacher = distill_mod.Teacher(os.path.join(args.work, args.teacher), int(sids.shape[0]), args.tau, cfg.history)
    tri = distill_mod.TrieIndex(trie, sids, cfg.cmax)
    params = [p for n, p in prm.named_parameters() if n != "node_emb"] + list(query.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    warm = 300
    st = {"step": 0, "best": -1.0, "best_step": 0, "evals_since_best": 0, "train_seconds": 0.0, "lr_scale": 1.0}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * st["lr_scale"])
    sids_t = torch.from_numpy(sids.astype(np.int64))
    chunks = Chunks(train_seqs, cfg.history)
    rng = np.random.default_rng(0)
    gen_rng = torch.Generator().manual_seed(0)
    ckpt = os.path.join(args.work, f"{args.out}.ckpt")
    curve = os.path.join(args.curve_dir, f"{args.out}_curve.jsonl")
    if os.path.exists(ckpt):
        c = torch.load(ckpt, weights_only=False)
        prm.load_state_dict(c["prm"])
        query.load_state_dict(c["query"])
        opt.load_state_dict(c["opt"])
        sched.load_state_dict(c["sched"])
        st = c["state"]
        rng.bit_generator.state = c["rng"]
        gen_rng.set_state(c["gen_rng"])
        print(f"resumed at step {st['step']} (best {st['best']:.4f} at step {st['best_step']})", flush=True)
    elif os.path.exists(curve):
        os.remove(curve)
    n_prm = sum(p.numel() for n, p in prm.named_parameters() if n != "node_emb") + (cfg.levels * cfg.cmax + 1) * cfg.d
    n_gen = sum(p.numel() for p in gen.parameters())
    print(f"PRM {n_prm} params ({100 * n_prm / n_gen:.1f}% of the generator's {n_gen}); nothing per item or node",
          flush=True)

    def save():
        torch.save({"prm": prm.state_dict(), "query": query.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "state": st, "rng": rng.bit_generator.state,
                    "gen_rng": gen_rng.get_state()}, ckpt + ".tmp")
        os.replace(ckpt + ".tmp", ckpt)

    def keep_best(val):
        with torch.no_grad():
            prm.node_emb.copy_(query.table())      # folded for export (--prm-query path)
        torch.save(model.state_dict(), os.path.join(args.work, f"{args.out}.pt"))
        torch.save({"prm": prm.state_dict(), "query": query.state_dict()},
                   os.path.join(args.work, f"{args.out}.best.ckpt"))
        json.dump(dict(info, config=cfg.to_dict(), params_prm=n_prm,
                       prm_training={"query": "path", "head": "mlp", "distilled_from": args.teacher,
                                     "tau": args.tau, "positions": args.positions, "step": st["step"],
                                     "valid": val}),
                  open(os.path.join(args.work, f"{args.out}.json"), "w"), indent=1)

    grid = [(4, 16), (16, 64)]
    t_run = time.time()
    ema = None
    t0 = time.time()
    while st["step"] < args.steps and st["evals_since_best"] < args.patience:
        if time.time() - t_run > args.minutes * 60:
            st["train_seconds"] += time.time() - t0
            save()
            print(f"stopped at step {st['step']}: run again to resume", flush=True)
            return
        # a few random chunks of about --chunk-targets padded positions
        idx, tot = [], 0
        while tot < args.chunk_targets:
            i = int(rng.integers(len(chunks)))
            idx.append(i)
            tot += int(chunks.lens[i])
        hist, mask, _ = chunks.batch(np.array(idx))
        hist, mask = torch.from_numpy(hist), torch.from_numpy(mask)
        with torch.no_grad():
            mem = gen.encode(enc_table(cfg, sids_t)[hist], mask)
        loss, agree = distill_mod.prm_distill_loss(prm, query, tri, mem, mask,
                                                   lambda bi, pi: teacher.log_probs_at(hist, mask, bi, pi),
                                                   gen_rng, args.positions)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        st["step"] += 1
        cur = np.array([loss.item()] + agree)
        ema = cur if ema is None else 0.98 * ema + 0.02 * cur
        if st["step"] % 100 == 0:
            print(f"step {st['step']} loss {ema[0]:.3f} agree " + "/".join(f"{a:.2f}" for a in ema[1:])
                  + f" | {(st['train_seconds'] + time.time() - t0) / st['step']:.2f} s/step", flush=True)
        if st["step"] % args.eval_every == 0 or st["step"] == args.steps:
            st["train_seconds"] += time.time() - t0
            v0 = time.time()
            val = guided_recall(gen, prm, query, tables, valid_pairs, sids_t, grid, args.mix, args.results)
            metric = float(np.mean(list(val.values())))
            row = {"step": st["step"], "loss": round(float(ema[0]), 4),
                   "teacher_agreement": [round(float(a), 4) for a in ema[1:]],
                   f"valid_guided_recall@{args.results}": val, "mix": args.mix, "valid_users": args.valid_users,
                   "lr": args.lr * st["lr_scale"], "train_seconds": round(st["train_seconds"], 1),
                   "valid_seconds": round(time.time() - v0, 1)}
            print(json.dumps(row), flush=True)
            with open(curve, "a") as f:
                f.write(json.dumps(row) + "\n")
            if metric > st["best"]:
                st["best"], st["best_step"], st["evals_since_best"] = metric, st["step"], 0
                keep_best(val)
            else:
                st["evals_since_best"] += 1
                st["lr_scale"] *= 0.5
            save()
            t0 = time.time()
    print(f"done at step {st['step']}: best {st['best']:.4f} at step {st['best_step']}", flush=True)


if __name__ == "__main__":
    main()
