"""An e-graph over graphopt's IR: e-classes of equal IR values, e-nodes that are IR nodes.

The e-graph holds many equivalent graphs at once (egg, Willsey et al. POPL 2021; Tensat,
Yang et al. MLSys 2021):

- an **e-class** is a set of IR :class:`~optimizer.ir.Value` objects proved equal; a union-find
  over class ids merges classes. Each class keeps a representative value (:meth:`EGraph.rep`,
  a constant when it holds one, else its oldest value), which rules' ``where`` clauses and
  rewrites read, since every value of a class has the same element type, rank and static dims;
- an **e-node** is an IR :class:`~optimizer.ir.Node` seen through its inputs' classes: its
  canonical key is ``(op, domain, attributes, number of outputs, capture names, unique token,
  input classes)``, so two nodes computing the same op over equal inputs are one e-node
  (congruence), whatever their output types. A node with several outputs is one e-node whose
  outputs each belong to their own class (:attr:`ENode.outs`);
- :meth:`EGraph.rebuild` restores congruence after unions (egg's deferred rebuilding): the
  parents of merged classes are re-keyed, and parents that became equal merge their outputs.

Nodes that must stay distinct (random generators, opaque custom ops) carry a unique token in
their key, so they are never merged with another node. The e-graph only grows: nothing is ever
removed, which is what makes saturation order-independent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from optimizer.ir import Graph, Node, Value

__all__ = ["ORIGINAL", "EClass", "EGraph", "ENode"]

#: ``ENode.origin`` of the nodes of the input graph (rule applications count from 0).
ORIGINAL = -1


class ENode:
    """One e-node: a representative IR node and the classes of its inputs and outputs.

    ``kids`` are the classes of ``node.inputs`` (None for an omitted optional input) followed by
    those of ``node.captures``; ``outs`` the class of each output; ``origin`` the rule
    application that created it (:data:`ORIGINAL` for the input graph); ``chain`` how many
    applications of that same rule in a row led to it (a guard against self-feeding rules).
    """

    __slots__ = ("node", "kids", "outs", "sig", "key", "origin", "chain", "alive", "survivor")

    def __init__(self, node: Node, kids: tuple, outs: tuple[int, ...], sig: int, origin: int):
        self.node = node
        self.kids: tuple[int | None, ...] = kids
        self.outs = outs
        self.sig = sig
        self.key: tuple = (sig, kids)
        self.origin = origin
        self.chain = 0
        self.alive = True
        self.survivor: int | None = None  # set when congruence merged it into another e-node


class EClass:
    """One e-class: its member e-nodes, the e-nodes that read it, a representative value,
    the constant it holds (if any) and whether its value is computable from constants alone
    (``computed``: set by saturation's constant analysis, :mod:`~optimizer.search.eqsat_fold`,
    for classes it has not folded into a constant)."""

    __slots__ = ("members", "parents", "rep", "const", "computed")

    def __init__(self, rep: Value) -> None:
        self.members: list[int] = []
        self.parents: list[int] = []
        self.rep = rep
        self.const: Value | None = rep if rep.is_constant else None
        self.computed = False

    @property
    def constant_like(self) -> bool:
        """Whether the class holds a constant or is computable from constants alone."""
        return self.const is not None or self.computed


class EGraph:
    """E-classes of IR values under a union-find, with congruence closure (module docstring)."""

    def __init__(self) -> None:
        self.enodes: list[ENode] = []
        self._parent: list[int] = []  # union-find over class ids
        self._classes: dict[int, EClass] = {}  # canonical id -> class
        self._value_class: dict[Value, int] = {}
        self._node_enode: dict[Node, int] = {}
        self._memo: dict[tuple, int] = {}  # canonical key -> e-node
        self._sigs: dict[tuple, int] = {}
        self._by_op: dict[tuple[str, str], list[int]] = {}
        self._pending: list[int] = []  # classes whose parents need re-keying
        #: Classes created or merged, and e-nodes created, since :meth:`take_changes`.
        self._changed: set[int] = set()
        self._new_enodes: list[int] = []
        self.unions = 0
        self._dead = 0
        #: Classes that a union gave a constant or made computed, since :meth:`take_gained`.
        self._gained: list[int] = []
        # Member and parent lists stay sorted and unique as nodes are added (ids only grow);
        # unions and congruence merges mark the classes whose lists need compacting.
        self._untidy: set[int] = set()

    # ------------------------------------------------------------------ queries

    def find(self, c: int) -> int:
        """The canonical id of class ``c`` (with path halving)."""
        parent = self._parent
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    def klass(self, c: int) -> EClass:
        """The class ``c`` (any id of it)."""
        return self._classes[self.find(c)]

    def class_ids(self) -> list[int]:
        """Canonical class ids, ascending."""
        return sorted(self._classes)

    @property
    def num_classes(self) -> int:
        return len(self._classes)

    @property
    def num_enodes(self) -> int:
        """Live e-nodes (those congruence has not merged into another)."""
        return len(self.enodes) - self._dead

    def class_of(self, value: Value) -> int | None:
        """The canonical class of ``value``, or None when it was never added."""
        c = self._value_class.get(value)
        return None if c is None else self.find(c)

    def enode_of(self, node: Node) -> int | None:
        """The live e-node that ``node`` became (following congruence merges), or None."""
        e = self._node_enode.get(node)
        return None if e is None else self.live(e)

    def live(self, e: int) -> int:
        """The live e-node that e-node ``e`` is now (itself unless congruence merged it)."""
        while not self.enodes[e].alive:
            e = self.enodes[e].survivor  # type: ignore[assignment]
        return e

    def contains(self, node: Node) -> bool:
        """Whether ``node`` is already in the e-graph."""
        return node in self._node_enode

    def rep(self, c: int) -> Value:
        """The representative value of class ``c``."""
        return self._classes[self.find(c)].rep

    def members(self, c: int) -> list[int]:
        """Live member e-nodes of class ``c``, without repeats, ascending (do not mutate)."""
        c = self.find(c)
        if c in self._untidy:
            self._tidy(c)
        return self._classes[c].members

    def parents(self, c: int) -> list[int]:
        """Live e-nodes that read class ``c``, without repeats, ascending (do not mutate)."""
        c = self.find(c)
        if c in self._untidy:
            self._tidy(c)
        return self._classes[c].parents

    def _tidy(self, c: int) -> None:
        cls = self._classes[c]
        cls.members = sorted({m for m in cls.members if self.enodes[m].alive})
        cls.parents = sorted({p for p in cls.parents if self.enodes[p].alive})
        self._untidy.discard(c)

    def outputs_in(self, e: int, c: int) -> list[int]:
        """Indices of e-node ``e``'s outputs that lie in class ``c``."""
        c = self.find(c)
        return [i for i, o in enumerate(self.enodes[e].outs) if self.find(o) == c]

    def kid_classes(self, e: int) -> tuple[int | None, ...]:
        """Canonical classes of e-node ``e``'s inputs and captures (None: omitted input)."""
        enode = self.enodes[e]
        if not self._pending and enode.alive:
            return enode.kids  # rebuilt: a live e-node's kids are canonical (congruence)
        return tuple(None if k is None else self.find(k) for k in enode.kids)

    def by_op(self, domain: str, op: str) -> list[int]:
        """Live e-nodes of one op, ascending (domain "" and "ai.onnx" are the same)."""
        found = self._by_op.get((_norm(domain), op), [])
        return [e for e in found if self.enodes[e].alive]

    def touch(self, c: int) -> None:
        """Mark class ``c`` changed (for :meth:`take_changes`), as an analysis that learnt
        something about it does: matches over it may differ now."""
        self._changed.add(self.find(c))

    def take_gained(self) -> list[int]:
        """Classes that a union gave a constant or made :attr:`EClass.computed` since the last
        call (canonical ids): their readers may be foldable now."""
        found = sorted({self.find(c) for c in self._gained})
        self._gained = []
        return found

    def has_op(self, domain: str, op: str) -> bool:
        """Whether some e-node is of this op (congruence keeps one of any e-nodes it merges,
        so an op once present stays present)."""
        return bool(self._by_op.get((_norm(domain), op)))

    def take_changes(self) -> tuple[set[int], list[int]]:
        """Classes created or merged and e-nodes created since the last call (canonical ids)."""
        changed = {self.find(c) for c in self._changed}
        new = [e for e in self._new_enodes if self.enodes[e].alive]
        self._changed, self._new_enodes = set(), []
        return changed, new

    # ------------------------------------------------------------------ building

    def add_graph(self, graph: Graph) -> list[int]:
        """Add every node of ``graph``; returns the classes of its outputs."""
        for value in graph.inputs:
            self.add(value)
        return [self.add(v) for v in graph.outputs]

    def add(self, value: Value, origin: int = ORIGINAL) -> int:
        """Add ``value`` and everything it reads (nodes not yet present get ``origin``);
        returns its canonical class."""
        known = self._value_class.get(value)
        if known is not None:
            return self.find(known)
        stack: list[tuple[Node, bool]] = [(value.node, False)]
        while stack:  # iterative post-order: deep graphs would exhaust Python's recursion
            node, ready = stack.pop()
            if node in self._node_enode:
                continue
            if ready:
                self._add_node(node, origin)
                continue
            stack.append((node, True))
            for operand in reversed(node.operands):
                if operand.node not in self._node_enode:
                    stack.append((operand.node, False))
        return self.find(self._value_class[value])

    def _signature(self, node: Node) -> int:
        if node.is_source:
            sig: tuple = ("source", id(node))  # hash-consed: equal sources are one object
        else:
            sig = (
                node.op,
                _norm(node.domain),
                node.attrs,
                len(node.outputs),
                tuple(name for name, _ in node.captures),
                node.unique,
            )
        found = self._sigs.get(sig)
        if found is None:
            found = self._sigs[sig] = len(self._sigs)
        return found

    def _add_node(self, node: Node, origin: int) -> int:
        vc = self._value_class
        kids = tuple(None if v is None else self.find(vc[v]) for v in node.inputs) + tuple(
            self.find(vc[v]) for _, v in node.captures
        )
        sig = self._signature(node)
        key = (sig, kids)
        existing = self._lookup(key)
        if existing is not None:  # congruent with a node already present
            self._node_enode[node] = existing
            for value, c in zip(node.outputs, self.enodes[existing].outs, strict=True):
                vc[value] = c
            return existing
        eid = len(self.enodes)
        outs = []
        for value in node.outputs:
            cid = len(self._parent)
            self._parent.append(cid)
            cls = EClass(value)
            cls.members.append(eid)
            self._classes[cid] = cls
            vc[value] = cid
            self._changed.add(cid)
            outs.append(cid)
        enode = ENode(node, kids, tuple(outs), sig, origin)
        self.enodes.append(enode)
        self._node_enode[node] = eid
        self._memo[key] = eid
        for k in dict.fromkeys(k for k in kids if k is not None):
            self._classes[k].parents.append(eid)
        self._by_op.setdefault((_norm(node.domain), node.op), []).append(eid)
        self._new_enodes.append(eid)
        return eid

    def _lookup(self, key: tuple) -> int | None:
        e = self._memo.get(key)
        return None if e is None else self.live(e)

    # ------------------------------------------------------------------ merging

    def union(self, a: int, b: int) -> bool:
        """Merge classes ``a`` and ``b``; False when they were already one. The older (lower)
        id stays canonical, so ids and representatives do not depend on hashing."""
        a, b = self.find(a), self.find(b)
        if a == b:
            return False
        root, other = (a, b) if a < b else (b, a)
        keep, gone = self._classes[root], self._classes.pop(other)
        self._parent[other] = root
        keep.members.extend(gone.members)
        keep.parents.extend(gone.parents)
        if (keep.const is None) != (gone.const is None) or keep.computed != gone.computed:
            self._gained.append(root)
        if keep.const is None and gone.const is not None:
            keep.const = gone.const
            keep.rep = gone.const  # rules test is_const(x) on the representative
        keep.computed = keep.computed or gone.computed
        self._pending.append(root)
        self._changed.add(root)
        self._untidy.add(root)
        self._untidy.discard(other)
        self.unions += 1
        return True

    def rebuild(self) -> int:
        """Restore congruence closure after unions; returns how many unions it made."""
        before = self.unions
        while self._pending:
            todo = sorted({self.find(c) for c in self._pending})
            self._pending = []
            for c in todo:
                self._repair(self.find(c))
        return self.unions - before

    def _repair(self, c: int) -> None:
        for p in list(self.parents(c)):  # unions below may extend the list
            enode = self.enodes[p]
            if not enode.alive:
                continue  # merged while repairing an earlier parent
            if self._memo.get(enode.key) == p:
                del self._memo[enode.key]
            enode.kids = tuple(None if k is None else self.find(k) for k in enode.kids)
            enode.key = (enode.sig, enode.kids)
            other = self._lookup(enode.key)
            if other is None or other == p:
                self._memo[enode.key] = p
                continue
            keep, gone = (p, other) if p < other else (other, p)
            self.enodes[gone].alive = False
            self.enodes[gone].survivor = keep
            self._dead += 1
            dead = self.enodes[gone]
            self._untidy.update(self.find(k) for k in dead.kids if k is not None)
            self._untidy.update(self.find(o) for o in dead.outs)
            self._memo[enode.key] = keep
            for x, y in zip(self.enodes[keep].outs, self.enodes[gone].outs, strict=True):
                self.union(x, y)

    # ------------------------------------------------------------------ traversal

    def reachable(self, roots: Iterable[int], members=None) -> list[int]:
        """Canonical classes reachable from ``roots`` through the kids of every member (or of
        ``members(c)`` when given), in discovery order."""
        members = members or self.members
        order: list[int] = []
        seen: set[int] = set()
        stack = [self.find(r) for r in roots]
        while stack:
            c = stack.pop()
            if c in seen:
                continue
            seen.add(c)
            order.append(c)
            for e in members(c):
                for k in self.enodes[e].kids:
                    if k is not None and self.find(k) not in seen:
                        stack.append(self.find(k))
        return order

    def iter_enodes(self) -> Iterator[int]:
        """Live e-node ids, ascending."""
        return (i for i, e in enumerate(self.enodes) if e.alive)


def _norm(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain
