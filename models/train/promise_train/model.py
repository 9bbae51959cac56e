"""The generator (TIGER-style encoder-decoder over SID codes) and the PRM, written with
plain modules so that the exported ONNX graphs have exactly the shapes the runtime needs
and every weight is one named initializer used as `x @ W` (W stored [in, out]).

Shapes (B users, H history items, L SID levels incl. disambiguation, C codebook, d model):
  encoder: codes [B,H,L] int64, mask [B,H] f32 (1 = real item)        -> memory [B,H,d]
           one token per history item = sum of its L level-code embeddings + position
           (ours: TIGER feeds L tokens per item; summing keeps the encoder 4x shorter);
           with cfg.causal, item t attends to items <= t only (SASRec-style), so one
           encoder pass serves every target position of a sequence in training
           (`decode_all`); at inference the decoder reads the whole memory as before
  decoder: memory [B|1,H,d], mask, prefix [K,L-1] int64 (codes of levels 1..L-1, padded)
           tokens = BOS, s1..s_{L-1}; causal self-attn + cross-attn  -> logp [K,L,C]
           row b of logp = log-softmax over level-(b+1) codes (codes >= that level's
           codebook size get -1e9 before the softmax)
  prm:     memory, mask, nodes [M] (trie node ids)                    -> score [M]
           query = node embedding; 1 block of cross-attn over memory (heads/4 heads)
           + RMSNorm + FFN; MLP -> one logit
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

NEG = -1e9


def lin(i, o):
    w = torch.empty(i, o)
    nn.init.normal_(w, std=1.0 / math.sqrt(i))
    return nn.Parameter(w)


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.eps) * self.w


class Attention(nn.Module):
    def __init__(self, d, heads, dh, dropout=0.0):
        super().__init__()
        self.h, self.dh = heads, dh
        self.drop = nn.Dropout(dropout)
        self.wq, self.wk, self.wv = lin(d, heads * dh), lin(d, heads * dh), lin(d, heads * dh)
        self.wo = lin(heads * dh, d)

    def forward(self, x, kv, bias):
        # x [B,Q,d], kv [B',S,d], bias broadcastable to [B,h,Q,S]
        b, q, _ = x.shape
        bk, s, _ = kv.shape
        qh = (x @ self.wq).reshape(b, q, self.h, self.dh).transpose(1, 2)
        kh = (kv @ self.wk).reshape(bk, s, self.h, self.dh).transpose(1, 2)
        vh = (kv @ self.wv).reshape(bk, s, self.h, self.dh).transpose(1, 2)
        att = (qh @ kh.transpose(2, 3)) * (1.0 / math.sqrt(self.dh)) + bias
        att = self.drop(torch.softmax(att, dim=-1))
        out = (att @ vh).transpose(1, 2).reshape(b, q, self.h * self.dh)
        return out @ self.wo


class FFN(nn.Module):
    def __init__(self, d, ff, dropout=0.0):
        super().__init__()
        self.w1, self.w2 = lin(d, ff), lin(ff, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(torch.relu(x @ self.w1)) @ self.w2


class EncLayer(nn.Module):
    def __init__(self, d, heads, dh, ff, dropout=0.0):
        super().__init__()
        self.n1, self.att = RMSNorm(d), Attention(d, heads, dh, dropout)
        self.n2, self.ffn = RMSNorm(d), FFN(d, ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, bias):
        h = self.n1(x)
        x = x + self.drop(self.att(h, h, bias))
        return x + self.drop(self.ffn(self.n2(x)))


class DecLayer(nn.Module):
    def __init__(self, d, heads, dh, ff, dropout=0.0):
        super().__init__()
        self.n1, self.self_att = RMSNorm(d), Attention(d, heads, dh, dropout)
        self.n2, self.cross_att = RMSNorm(d), Attention(d, heads, dh, dropout)
        self.n3, self.ffn = RMSNorm(d), FFN(d, ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mem, causal, mem_bias, positions=0):
        # positions > 0: x is [B*P, L, d], P target positions per memory row of mem [B,H,d]
        # (P = H), and mem_bias [B,1,P*L,H] lets position p read memory <= p (`decode_all`)
        h = self.n1(x)
        x = x + self.drop(self.self_att(h, h, causal))
        if positions:
            bp, l, d = x.shape
            q = self.n2(x).reshape(bp // positions, positions * l, d)
            x = x + self.drop(self.cross_att(q, mem, mem_bias)).reshape(bp, l, d)
        else:
            x = x + self.drop(self.cross_att(self.n2(x), mem, mem_bias))
        return x + self.drop(self.ffn(self.n3(x)))


class Config:
    def __init__(self, **kw):
        self.levels = kw["levels"]          # L, including the disambiguation level
        self.codebook = kw["codebook"]      # list of L sizes
        self.history = kw.get("history", 20)
        self.d = kw["d"]
        self.heads = kw["heads"]
        self.dh = kw.get("dh", self.d // self.heads)
        self.ff = kw["ff"]
        self.enc_layers = kw["enc_layers"]
        self.dec_layers = kw["dec_layers"]
        self.prm_heads = max(1, self.heads // 4)
        self.prm_ff = kw.get("prm_ff", 2 * self.d)
        self.num_nodes = kw["num_nodes"]
        self.causal = kw.get("causal", False)    # causal encoder (trained on all positions)
        self.dropout = kw.get("dropout", 0.0)    # training only
        self.prm_head = kw.get("prm_head", "mlp")  # PRM output: "mlp" or "dot" (PRM.__init__)
        self.prm_kind = kw.get("prm_kind", "attention")  # or "dense" (DensePRM)
        # > 0: the encoder's token also adds a per-item embedding (manifest
        # model.encoder_input "codes_and_item"): the item is a column after its L codes
        self.item_ids = kw.get("item_ids", 0)

    @property
    def cmax(self):
        return max(self.codebook)

    def to_dict(self):
        return {k: v for k, v in self.__dict__.items()}

    @staticmethod
    def from_dict(d):
        cfg = Config(**{k: v for k, v in d.items() if k != "prm_heads"})
        cfg.prm_heads = d["prm_heads"]      # as trained, even if the default formula changes
        return cfg


def enc_table(cfg, sids_t):
    """The encoder's input columns per item [items, L(+1)]: its L codes, then (cfg.item_ids)
    its own index. Index it with history item ids to get Generator.encode's codes."""
    if not cfg.item_ids or sids_t.shape[1] == cfg.levels + 1:   # idempotent
        return sids_t
    return torch.cat([sids_t, torch.arange(len(sids_t), dtype=sids_t.dtype)[:, None]], 1)


class Generator(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        d, L, C = cfg.d, cfg.levels, cfg.cmax
        # rows l*C + code, then (cfg.item_ids) L*C + item
        self.enc_code_emb = nn.Parameter(torch.randn(L * C + cfg.item_ids, d) * 0.1)
        self.enc_pos = nn.Parameter(torch.randn(cfg.history, d) * 0.1)
        p = cfg.dropout
        self.emb_drop = nn.Dropout(p)
        self.enc = nn.ModuleList([EncLayer(d, cfg.heads, cfg.dh, cfg.ff, p) for _ in range(cfg.enc_layers)])
        self.enc_norm = RMSNorm(d)
        self.dec_code_emb = nn.Parameter(torch.randn(L * C, d) * 0.1)
        self.dec_bos = nn.Parameter(torch.randn(1, d) * 0.1)
        self.dec_pos = nn.Parameter(torch.randn(L, d) * 0.1)
        self.dec = nn.ModuleList([DecLayer(d, cfg.heads, cfg.dh, cfg.ff, p) for _ in range(cfg.dec_layers)])
        self.dec_norm = RMSNorm(d)
        self.head = nn.Parameter(torch.randn(L, d, C) / math.sqrt(d))
        offs = torch.arange(L) * C
        self.register_buffer("offsets", offs, persistent=False)
        enc_offs = torch.arange(L + (1 if cfg.item_ids else 0)) * C
        self.register_buffer("enc_offsets", enc_offs, persistent=False)
        lm = torch.zeros(L, C)
        for l, c in enumerate(cfg.codebook):
            lm[l, c:] = NEG
        self.register_buffer("level_mask", lm, persistent=False)
        causal = torch.triu(torch.full((L, L), NEG), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)
        if cfg.causal:
            h = cfg.history
            enc_causal = torch.triu(torch.full((h, h), NEG), diagonal=1)
            self.register_buffer("enc_causal", enc_causal, persistent=False)

    def enc_bias(self, mask):
        """The encoder's attention bias [B,1,H',H'] for a mask [B,H'] (H' <= H: a window
        whose leading all-padding columns were trimmed, exact because they are masked)."""
        bias = ((1.0 - mask) * NEG)[:, None, None, :]
        if self.cfg.causal:
            n = mask.shape[1]
            # exported as one [H,H] Constant (NEG above the diagonal)
            h = self.cfg.history
            c = self.enc_causal if n == h else self.enc_causal[h - n:, h - n:]
            bias = bias + c[None, None]
        return bias

    def encode(self, codes, mask):
        # codes [B,H',L(+1)] int64 (enc_table), mask [B,H'] f32; H' <= H (the last H' positions)
        n = codes.shape[1]
        x = self.emb_drop(self.enc_code_emb[codes + self.enc_offsets].sum(2) + self.enc_pos[self.cfg.history - n:])
        bias = self.enc_bias(mask)
        for layer in self.enc:
            x = layer(x, bias)
        return self.enc_norm(x)

    def decode(self, mem, mask, prefix):
        # mem [B|1,H,d], mask [B|1,H], prefix [K,L-1] int64 -> logp [K,L,C]
        k = prefix.shape[0]
        tok = self.dec_code_emb[prefix + self.offsets[:-1]]            # [K,L-1,d]
        x = torch.cat([self.dec_bos.expand(k, 1, -1), tok], 1) + self.dec_pos
        mem_bias = ((1.0 - mask) * NEG)[:, None, None, :]
        for layer in self.dec:
            x = layer(x, mem, self.causal, mem_bias)
        x = self.dec_norm(x)                                            # [K,L,d]
        logits = (x.transpose(0, 1) @ self.head).transpose(0, 1)        # [K,L,C]
        return torch.log_softmax(logits + self.level_mask, dim=-1)

    def decode_grouped(self, mem, mask, prefix, states=False):
        """`decode` for K prefixes per history without repeating the memory per prefix:
        mem [B,H,d], mask [B,H], prefix [B,K,L-1] -> logp [B,K,L,C]. The cross-attention's
        keys and values are computed once per history (the beam search of beam.py and the
        PRM's pools: K=16 times less work there than `decode` on repeated memories)."""
        b, k, _ = prefix.shape
        tok = self.dec_code_emb[prefix + self.offsets[:-1]]                  # [B,K,L-1,d]
        x = torch.cat([self.dec_bos.expand(b, k, 1, -1), tok], 2) + self.dec_pos
        L = x.shape[2]
        x = x.reshape(b * k, L, -1)
        mem_bias = ((1.0 - mask) * NEG)[:, None, None, :]                     # [B,1,1,H]
        for layer in self.dec:
            x = layer(x, mem, self.causal, mem_bias, positions=k)
        x = self.dec_norm(x)
        logits = (x.transpose(0, 1) @ self.head).transpose(0, 1)
        logp = torch.log_softmax(logits + self.level_mask, dim=-1).reshape(b, k, L, -1)
        if states:
            # the decoder's state [B,K,L,d]: row b is what scores the level-(b+1) code
            return logp, x.reshape(b, k, L, -1)
        return logp

    def decode_all(self, mem, mask, target):
        """Training with a causal encoder: the decoder for every position at once.
        mem [B,P,d] (P positions), mask [B,P], target [B,P,L] codes of the item that
        follows position p -> logp [B,P,L,C]; position p reads memory 0..p only."""
        b, n, L = target.shape
        tok = self.dec_code_emb[target[:, :, :-1] + self.offsets[:-1]]      # [B,P,L-1,d]
        x = torch.cat([self.dec_bos.expand(b, n, 1, -1), tok], 2) + self.dec_pos
        x = self.emb_drop(x).reshape(b * n, L, -1)
        later = torch.full((n, n), NEG, dtype=torch.float32).triu(1)        # [P(query),P(key)]
        mem_bias = ((1.0 - mask) * NEG)[:, None, None, :] + later.repeat_interleave(L, 0)[None, None]
        for layer in self.dec:
            x = layer(x, mem, self.causal, mem_bias, positions=n)
        x = self.dec_norm(x)                                                 # [B*P,L,d]
        logits = (x.transpose(0, 1) @ self.head).transpose(0, 1)
        return torch.log_softmax(logits + self.level_mask, dim=-1).reshape(b, n, L, -1)


class PRM(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        d = cfg.d
        dh = cfg.dh
        self.node_emb = nn.Parameter(torch.randn(cfg.num_nodes, d) * 0.1)
        self.n1, self.att = RMSNorm(d), Attention(d, cfg.prm_heads, dh)
        self.n2, self.ffn = RMSNorm(d), FFN(d, cfg.prm_ff)
        self.n3 = RMSNorm(d)
        self.w_out1, self.b_out1 = lin(d, d), nn.Parameter(torch.zeros(d))
        self.w_out2, self.b_out2 = lin(d, 1), nn.Parameter(torch.zeros(1))
        # cfg.prm_head == "dot": a bilinear term <n3(h) @ w_dot, query> joins the MLP's
        # logit, so the score can match a user state against the node (a ReLU MLP of one
        # d-vector cannot form that product); "mlp": the MLP alone (the bundles before it)
        self.head = getattr(cfg, "prm_head", "mlp")
        if self.head == "dot":
            self.w_dot = nn.Parameter(torch.zeros(d, d))

    def score(self, mem, mask, nodes):
        # mem [B,H,d], mask [B,H], nodes [B,M] -> [B,M]
        return self.score_query(mem, mask, self.node_emb[nodes])

    def score_query(self, mem, mask, q):
        # mem [B,H,d], mask [B,H], q [B,M,d] node queries -> [B,M]
        bias = ((1.0 - mask) * NEG)[:, None, None, :]
        h = q + self.att(self.n1(q), mem, bias)
        h = h + self.ffn(self.n2(h))
        z = self.n3(h)
        o = (torch.relu(z @ self.w_out1 + self.b_out1) @ self.w_out2 + self.b_out2).squeeze(-1)
        if self.head == "dot":
            o = o + ((z @ self.w_dot) * q).sum(-1)
        return o


class DensePRM(nn.Module):
    """`prm_kind: "dense"` (train_dense_prm.py): the user state u = E[last] @ w + b, the
    encoder's row of the latest item, and one embedding per trie node:
    score(node) = <u, node[node]> + node_bias[node]."""

    def __init__(self, d, num_nodes):
        super().__init__()
        self.w = nn.Parameter(torch.eye(d))
        self.b = nn.Parameter(torch.zeros(d))
        self.node = nn.Parameter(torch.randn(num_nodes, d) * 0.05)
        self.node_bias = nn.Parameter(torch.zeros(num_nodes))
        self._tied = None

    def tie_leaves(self, table, leaf0, table_rows):
        """`train.py --tie-leaf`: leaf node leaf0 + i reads row table_rows[i] of `table` (the
        encoder's per-item input rows) instead of its own row, as SASRec ties its input and
        output tables. Training only: `materialize` copies the tied rows into `node` before a
        model is saved, so a saved model and its bundle are the untied format."""
        self._tied = ([table], int(leaf0), torch.as_tensor(table_rows, dtype=torch.long))

    def rows(self, idx):
        """The rows of nodes `idx` (any shape) -> [..., d]."""
        if self._tied is None:
            return self.node[idx]
        (table,), leaf0, table_rows = self._tied
        leaf = idx >= leaf0
        tied = table[table_rows[(idx - leaf0).clamp(min=0)]]
        return torch.where(leaf[..., None], tied, self.node[idx])

    @torch.no_grad()
    def materialize(self):
        if self._tied is not None:
            (table,), leaf0, table_rows = self._tied
            self.node[leaf0:leaf0 + len(table_rows)] = table[table_rows]

    def user(self, last):
        return last @ self.w + self.b

    def score(self, mem, mask, nodes):
        # mem [B,H,d] (right-aligned: row H-1 is the latest item), mask [B,H], nodes [B,M]
        # -> [B,M]; a history of padding only has no latest item: u = b
        u = self.user(mem[:, -1] * mask[:, -1].unsqueeze(-1))   # Gather, not Slice (the bundle op set)
        return (self.rows(nodes) * u[:, None, :]).sum(-1) + self.node_bias[nodes]


class Promise(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.gen = Generator(cfg)
        self.prm = DensePRM(cfg.d, cfg.num_nodes) if cfg.prm_kind == "dense" else PRM(cfg)

    def n_params(self):
        g = sum(p.numel() for p in self.gen.parameters())
        r = sum(p.numel() for p in self.prm.parameters())
        return g, r


def load_trained(work, name):
    """The model `name` trained into `work` (train.py / finetune_prm.py): (model, info)."""
    import json
    import os
    info = json.load(open(os.path.join(work, f"{name}.json")))
    model = Promise(Config.from_dict(info["config"]))
    model.load_state_dict(torch.load(os.path.join(work, f"{name}.pt")))
    return model, info


# Export wrappers: batch of one user, K prefixes / M nodes ---------------------------------
class EncoderGraph(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, history_codes, history_mask):
        return self.m.gen.encode(history_codes, history_mask)


class DecoderGraph(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, memory, history_mask, prefix_codes):
        return self.m.gen.decode(memory, history_mask, prefix_codes)


class PrmGraph(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, memory, history_mask, node_ids):
        return self.m.prm.score(memory, history_mask, node_ids[None, :])[0]


class PrmPathGraph(nn.Module):
    """The PRM with `model.prm_query: "path"`: a node's query is the sum of the rows of its
    path, path_emb [L*C+1, d] (row l*C + code per level above the node, row L*C, zero, per
    level below), input node_path [M, L]. The table no longer grows with the catalog."""

    def __init__(self, m, path_emb):
        super().__init__()
        self.m = m
        self.path_emb = nn.Parameter(path_emb)

    def forward(self, memory, history_mask, node_path):
        q = self.path_emb[node_path].sum(1)
        return self.m.prm.score_query(memory, history_mask, q[None])[0]
