"""The prefix trie over SIDs, in the exact layout that `catalog.bin` stores.

Node ids are breadth-first: root = 0, then all depth-1 prefixes in lexicographic order,
then depth 2, ... so the children of a node are a contiguous, code-sorted node range and
node order == lexicographic SID order within a depth (the search's tie-break).
"""
from __future__ import annotations

import numpy as np


class Trie:
    def __init__(self, sids: np.ndarray):
        n, L = sids.shape
        self.levels = L
        self.n_items = n
        self.level_start = [0, 1]
        prefixes = [[()]]
        index = [{(): 0}]
        for d in range(1, L + 1):
            ps = sorted({tuple(int(c) for c in row[:d]) for row in sids})
            prefixes.append(ps)
            base = self.level_start[-1]
            index.append({p: base + i for i, p in enumerate(ps)})
            self.level_start.append(base + len(ps))
        self.num_nodes = self.level_start[-1]
        self.node_code = np.full(self.num_nodes, 0xFFFF, dtype=np.uint16)
        self.first_child = np.zeros(self.num_nodes + 1, dtype=np.uint32)
        self.depth = np.zeros(self.num_nodes, dtype=np.int64)
        for d in range(1, L + 1):
            for p in prefixes[d]:
                self.node_code[index[d][p]] = p[-1]
                self.depth[index[d][p]] = d
        # CSR: children of n are node ids [first_child[n], first_child[n+1])
        counts = np.zeros(self.num_nodes, dtype=np.int64)
        for d in range(1, L + 1):
            for p in prefixes[d]:
                counts[index[d - 1][p[:-1]]] += 1
        self.first_child[0] = 1
        self.first_child[1:] = 1 + np.cumsum(counts)
        self.first_child[self.num_nodes] = self.num_nodes  # leaves past the end
        # leaves: nodes of depth L; leaf_item[leaf - level_start[L]] = item
        self.item_leaf = np.array([index[L][tuple(int(c) for c in r)] for r in sids], dtype=np.uint32)
        self.leaf_item = np.zeros(n, dtype=np.uint32)
        self.leaf_item[self.item_leaf - self.level_start[L]] = np.arange(n, dtype=np.uint32)
        # path[i, d-1] = node id of item i's depth-d prefix
        self.path = np.array([[index[d][tuple(int(c) for c in r[:d])] for d in range(1, L + 1)]
                              for r in sids], dtype=np.int64)
        self.sids = sids.astype(np.uint16)

    def children(self, node: int):
        return range(int(self.first_child[node]), int(self.first_child[node + 1]))

    def parents(self) -> np.ndarray:
        """parent[n] for every node (the root's: 0)."""
        inner = self.level_start[self.levels]
        counts = np.diff(self.first_child[:inner + 1].astype(np.int64))
        parent = np.zeros(self.num_nodes, dtype=np.int64)
        parent[1:] = np.repeat(np.arange(inner, dtype=np.int64), counts)
        return parent

    def path_rows(self, width: int) -> np.ndarray:
        """The PRM's `node_path` input of every node ([num_nodes, L], `model.prm_query:
        "path"`): l * width + code of the node's level-l ancestor (itself at its own level)
        for each level above the node, L * width (the padding row) below it."""
        L = self.levels
        rows = np.full((self.num_nodes, L), L * width, dtype=np.int64)
        parent = self.parents()
        for d in range(1, L + 1):       # parents' rows are complete before their children's
            a, b = self.level_start[d], self.level_start[d + 1]
            rows[a:b, :d - 1] = rows[parent[a:b], :d - 1]
            rows[a:b, d - 1] = (d - 1) * width + self.node_code[a:b].astype(np.int64)
        return rows
