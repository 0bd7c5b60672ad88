//! Phase 2, DAG: resolves every instruction reference and builds the flow graph with
//! petgraph; refuses duplicate ids, unknown references, cycles, unreachable instructions and
//! edges that cross a loop body, and works out which instructions may run in parallel.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use eyeflow_ir::pb::IrOpcode;
use marked_yaml::Span;
use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, EdgeRef};

use crate::ast::{Rule, Text};
use crate::error::{Result, Source};
use crate::opcode::Spec;

/// How one instruction leads to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `next`: the target depends on the source.
    Next,
    /// BRANCH `then` / `else`.
    Branch,
    /// LOOP `body`.
    Body,
}

/// A flow edge and the span of the reference that made it.
#[derive(Debug, Clone, Copy)]
struct Edge {
    kind: Kind,
    span: Span,
}

/// The rule's instruction graph, indexed like `rule.instructions`.
#[derive(Debug)]
pub(crate) struct Dag {
    /// Instruction ids by index.
    ids: Vec<String>,
    /// For each instruction, the instructions whose `next` names it (IR `depends_on`), in
    /// source order.
    pub(crate) depends_on: Vec<Vec<usize>>,
    /// For each instruction, the instructions its `compensation` names, in order.
    pub(crate) compensation: Vec<Vec<usize>>,
    /// Topological rank of each instruction (IR `sequence_number`).
    pub(crate) sequence: Vec<i32>,
    /// `reach[a][b]`: `b` runs after `a` in every execution where both run.
    reach: Vec<Vec<bool>>,
    /// Per BRANCH: instructions only on its `then` side, only on its `else` side.
    arms: Vec<(Vec<bool>, Vec<bool>)>,
    /// Instructions that run only as compensation steps.
    compensation_only: Vec<bool>,
}

impl Dag {
    /// Id of instruction `i`.
    pub(crate) fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    /// Whether `a` and `b` may run at the same time in one execution: neither follows the
    /// other, they are not on opposite arms of one BRANCH, and neither is a compensation step.
    pub(crate) fn parallel(&self, a: usize, b: usize) -> bool {
        a != b
            && !self.compensation_only[a]
            && !self.compensation_only[b]
            && !self.reach[a][b]
            && !self.reach[b][a]
            && !self
                .arms
                .iter()
                .any(|(then, other)| (then[a] && other[b]) || (other[a] && then[b]))
    }

    /// Whether `a` may run at the same time as any other instruction.
    pub(crate) fn has_parallel_peer(&self, a: usize) -> bool {
        (0..self.ids.len()).any(|b| self.parallel(a, b))
    }
}

/// Builds and checks the graph of `rule`, whose opcodes are `specs`.
pub(crate) fn build(rule: &Rule, specs: &[&Spec], source: &Source<'_>) -> Result<Dag> {
    let instructions = &rule.instructions;
    let n = instructions.len();
    let Some(entry) = instructions.first() else {
        return Err(source.rule(
            rule.instructions.span(),
            "the rule has no instructions; expected at least one",
        ));
    };

    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, ins) in instructions.iter().enumerate() {
        let id = ins.id.as_str();
        if !is_identifier(id) {
            return Err(source.rule(
                ins.id.span(),
                format!(
                    "instruction id `{id}` is not an identifier; expected letters, digits and `_`, not starting with a digit (expressions name results by id)"
                ),
            ));
        }
        if let Some(&first) = index.get(id) {
            let first = source.at(instructions[first].id.span());
            return Err(source.rule(
                ins.id.span(),
                format!(
                    "duplicate instruction id `{id}` (first at line {}); expected unique ids",
                    first.line
                ),
            ));
        }
        index.insert(id, i);
    }
    let resolve = |field: &str, target: &Text| -> Result<usize> {
        index.get(target.as_str()).copied().ok_or_else(|| {
            source.rule(
                target.span(),
                format!(
                    "`{field}` names instruction `{}`, which does not exist; expected the id of an instruction of this rule",
                    target.as_str()
                ),
            )
        })
    };

    let mut graph: DiGraph<usize, Edge> = DiGraph::with_capacity(n, n);
    for i in 0..n {
        graph.add_node(i);
    }
    let node = NodeIndex::new;
    let mut compensation: Vec<Vec<(usize, Span)>> = vec![Vec::new(); n];
    let mut body_of: Vec<Option<usize>> = vec![None; n];
    for (i, ins) in instructions.iter().enumerate() {
        if let Some(next) = &ins.next {
            for target in next.ids(next.span()) {
                let to = resolve("next", &target)?;
                graph.add_edge(
                    node(i),
                    node(to),
                    Edge {
                        kind: Kind::Next,
                        span: *target.span(),
                    },
                );
            }
        }
        for (field, target) in [("then", &ins.then), ("else", &ins.otherwise)] {
            if let Some(target) = target {
                let to = resolve(field, target)?;
                graph.add_edge(
                    node(i),
                    node(to),
                    Edge {
                        kind: Kind::Branch,
                        span: *target.span(),
                    },
                );
            }
        }
        if let Some(body) = &ins.body {
            let members = body.ids(body.span());
            if members.is_empty() {
                return Err(source.rule(
                    body.span(),
                    format!(
                        "LOOP `{}` has an empty body; expected the ids of the instructions run per iteration",
                        ins.id.as_str()
                    ),
                ));
            }
            for member in members {
                let to = resolve("body", &member)?;
                if let Some(other) = body_of[to] {
                    return Err(source.rule(
                        member.span(),
                        format!(
                            "instruction `{}` is already in the body of LOOP `{}`; expected each instruction in at most one body",
                            member.as_str(),
                            instructions[other].id.as_str()
                        ),
                    ));
                }
                body_of[to] = Some(i);
                graph.add_edge(
                    node(i),
                    node(to),
                    Edge {
                        kind: Kind::Body,
                        span: *member.span(),
                    },
                );
            }
        }
        if let Some(steps) = &ins.compensation {
            for step in steps.ids(steps.span()) {
                compensation[i].push((resolve("compensation", &step)?, *step.span()));
            }
        }
    }

    check_acyclic(
        &graph,
        instructions.iter().map(|i| i.id.as_str()).collect(),
        source,
    )?;

    // Reachability from the entry: flow edges plus compensation lists.
    let mut reached = vec![false; n];
    let mut dfs = Dfs::new(&graph, node(0));
    while let Some(nx) = dfs.next(&graph) {
        reached[nx.index()] = true;
    }
    let mut compensation_only = vec![false; n];
    for (owner, steps) in compensation.iter().enumerate() {
        for &(step, span) in steps {
            let step_ins = &instructions[step];
            if reached[step] || body_of[step].is_some() {
                return Err(source.rule(
                    &span,
                    format!(
                        "compensation step `{}` of `{}` is also part of the normal flow; expected an instruction that runs only as compensation",
                        step_ins.id.as_str(),
                        instructions[owner].id.as_str()
                    ),
                ));
            }
            if graph
                .edges_directed(node(step), Direction::Outgoing)
                .next()
                .is_some()
                || step_ins.compensation.is_some()
            {
                return Err(source.rule(
                    step_ins.id.span(),
                    format!(
                        "compensation step `{}` has its own `next`, `then`, `body` or `compensation`; expected a single instruction (compensation steps run as a list, in reverse order)",
                        step_ins.id.as_str()
                    ),
                ));
            }
            compensation_only[step] = true;
        }
    }
    for (i, ins) in instructions.iter().enumerate() {
        if !reached[i] && !compensation_only[i] {
            return Err(source.rule(
                ins.id.span(),
                format!(
                    "instruction `{}` is unreachable from the entry `{}`; expected another instruction to name it in `next`, `then`, `else`, `body` or `compensation`",
                    ins.id.as_str(),
                    entry.id.as_str()
                ),
            ));
        }
    }

    // Loop bodies are closed: flow edges neither enter nor leave a body except through its LOOP.
    for edge in graph.edge_references() {
        let (from, to) = (edge.source().index(), edge.target().index());
        if edge.weight().kind == Kind::Body || body_of[from] == body_of[to] {
            continue;
        }
        let (member, owner) = match (body_of[from], body_of[to]) {
            (Some(owner), _) => (from, owner),
            (None, Some(owner)) => (to, owner),
            (None, None) => continue,
        };
        return Err(source.rule(
            &edge.weight().span,
            format!(
                "`{}` -> `{}` crosses the body of LOOP `{}` (which holds `{}`); expected flow to enter a body only through its LOOP and to stay inside it",
                instructions[from].id.as_str(),
                instructions[to].id.as_str(),
                instructions[owner].id.as_str(),
                instructions[member].id.as_str()
            ),
        ));
    }

    let mut depends_on: Vec<Vec<usize>> = vec![Vec::new(); n];
    for edge in graph.edge_references() {
        if edge.weight().kind == Kind::Next {
            depends_on[edge.target().index()].push(edge.source().index());
        }
    }
    for deps in &mut depends_on {
        deps.sort_unstable();
        deps.dedup();
    }
    for (i, spec) in specs.iter().enumerate() {
        if spec.opcode == IrOpcode::Merge && depends_on[i].len() < 2 {
            return Err(source.rule(
                instructions[i].id.span(),
                format!(
                    "MERGE `{}` joins {} instruction(s); expected the `next` of at least two instructions to name it",
                    instructions[i].id.as_str(),
                    depends_on[i].len()
                ),
            ));
        }
    }

    // Order graph: flow edges, plus "a body member precedes what follows its LOOP" and
    // "an instruction precedes its compensation steps".
    let mut order = graph.map(|_, &i| i, |_, e| e.kind);
    for (member, owner) in body_of.iter().enumerate() {
        if let Some(owner) = owner {
            let after: Vec<NodeIndex> = graph
                .edges_directed(node(*owner), Direction::Outgoing)
                .filter(|e| e.weight().kind == Kind::Next)
                .map(|e| e.target())
                .collect();
            for target in after {
                order.add_edge(node(member), target, Kind::Next);
            }
        }
    }
    for (owner, steps) in compensation.iter().enumerate() {
        for &(step, _) in steps {
            order.add_edge(node(owner), node(step), Kind::Next);
        }
    }
    let reach: Vec<Vec<bool>> = (0..n)
        .map(|a| {
            let mut row = vec![false; n];
            let mut dfs = Dfs::new(&order, node(a));
            while let Some(nx) = dfs.next(&order) {
                row[nx.index()] = true;
            }
            row[a] = false;
            row
        })
        .collect();
    let reach_incl = |i: usize| {
        let mut row = reach[i].clone();
        row[i] = true;
        row
    };
    let arms = instructions
        .iter()
        .enumerate()
        .filter(|(i, _)| specs[*i].opcode == IrOpcode::Branch)
        .filter_map(|(_, ins)| {
            let then = reach_incl(*index.get(ins.then.as_ref()?.as_str())?);
            let other = match &ins.otherwise {
                Some(e) => reach_incl(*index.get(e.as_str())?),
                None => vec![false; n],
            };
            let only_then = then.iter().zip(&other).map(|(t, o)| *t && !o).collect();
            let only_else = other.iter().zip(&then).map(|(o, t)| *o && !t).collect();
            Some((only_then, only_else))
        })
        .collect();

    Ok(Dag {
        ids: instructions.iter().map(|i| i.id.to_string()).collect(),
        depends_on,
        compensation: compensation
            .into_iter()
            .map(|steps| steps.into_iter().map(|(step, _)| step).collect())
            .collect(),
        sequence: topological_ranks(&order),
        reach,
        arms,
        compensation_only,
    })
}

/// Refuses any cycle in the flow graph, naming its path and pointing at the reference
/// that closes it.
fn check_acyclic(graph: &DiGraph<usize, Edge>, ids: Vec<&str>, source: &Source<'_>) -> Result<()> {
    let Err(cycle) = petgraph::algo::toposort(graph, None) else {
        return Ok(());
    };
    let start = cycle.node_id();
    // Breadth-first search from `start` back to itself, remembering each node's parent edge.
    let mut parent: BTreeMap<NodeIndex, (NodeIndex, Span)> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut closing = None;
    'search: while let Some(at) = queue.pop_front() {
        for edge in graph.edges_directed(at, Direction::Outgoing) {
            let to = edge.target();
            if to == start {
                closing = Some((at, edge.weight().span));
                break 'search;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = parent.entry(to) {
                slot.insert((at, edge.weight().span));
                queue.push_back(to);
            }
        }
    }
    let (at, closing_span) = closing.unwrap_or((start, Span::new_blank()));
    // Walk back from the closing edge; spans[i] is the reference leaving nodes[i].
    let mut nodes = vec![at];
    let mut spans = vec![closing_span];
    let mut current = at;
    while current != start {
        let Some(&(previous, span)) = parent.get(&current) else {
            break;
        };
        nodes.push(previous);
        spans.push(span);
        current = previous;
    }
    nodes.reverse();
    spans.reverse();
    // Start the report at the instruction that comes first in the source.
    let first = (0..nodes.len())
        .min_by_key(|&i| nodes[i].index())
        .unwrap_or(0);
    nodes.rotate_left(first);
    spans.rotate_left(first);
    let mut path: Vec<&str> = nodes.iter().map(|n| ids[n.index()]).collect();
    path.push(ids[nodes[0].index()]);
    let span = spans.last().copied().unwrap_or(closing_span);
    Err(source.rule(
        &span,
        format!(
            "cycle {}; expected repetition to be written as a LOOP with max_iterations",
            path.join(" -> ")
        ),
    ))
}

/// Kahn's algorithm, lowest source index first among the ready instructions, so ranks are
/// deterministic and follow the source where the graph allows.
fn topological_ranks(order: &DiGraph<usize, Kind>) -> Vec<i32> {
    let n = order.node_count();
    let mut in_degree: Vec<usize> = (0..n)
        .map(|i| {
            order
                .edges_directed(NodeIndex::new(i), Direction::Incoming)
                .count()
        })
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| in_degree[i] == 0).map(Reverse).collect();
    let mut ranks = vec![0; n];
    let mut rank = 0;
    while let Some(Reverse(i)) = ready.pop() {
        ranks[i] = rank;
        rank += 1;
        for edge in order.edges_directed(NodeIndex::new(i), Direction::Outgoing) {
            let t = edge.target().index();
            in_degree[t] -= 1;
            if in_degree[t] == 0 {
                ready.push(Reverse(t));
            }
        }
    }
    ranks
}

/// A CEL identifier: ASCII letter or `_`, then letters, digits or `_`.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(is_identifier("read_temp_2"));
        assert!(is_identifier("_x"));
        assert!(!is_identifier("2x"));
        assert!(!is_identifier("read-temp"));
        assert!(!is_identifier(""));
    }
}
