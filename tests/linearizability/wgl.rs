//! A Wing–Gong linearizability checker, with Lowe's memoisation of the
//! configurations already explored (G. Lowe, "Testing for linearizability",
//! 2016), for one object whose sequential behaviour a [`Model`] gives.
//!
//! A history is a set of operations, each with the time it was invoked and
//! the time its answer came (none when the answer was lost: the operation
//! may have taken effect at any time after its invocation, or never). The
//! history is linearizable when some order of the operations respects real
//! time (an operation answered before another was invoked comes first) and
//! makes every answered operation's outcome the model's outcome; operations
//! of unknown outcome may be left out.
//!
//! The search walks the invocations and answers in time order. At an
//! invocation it tries to linearize that operation now (the model accepts
//! its outcome in the current state); at an answer whose operation is not
//! linearized yet, it backtracks. A configuration (set of operations
//! linearized, model state) seen before is not explored again, which keeps
//! the search polynomial for histories of a few concurrent clients.

use std::collections::HashSet;
use std::hash::Hash;

/// The sequential specification of one object.
pub trait Model: Clone + Eq + Hash {
    /// An operation with the outcome it had (or that its outcome is unknown).
    type Op;

    /// The state after `op` takes effect here, if it can: `None` when its
    /// recorded outcome is not what this state would give. An operation of
    /// unknown outcome answers the state it would leave if it took effect,
    /// or `None` if it could not (then it is as if it never happened).
    fn step(&self, op: &Self::Op) -> Option<Self>;
}

/// One operation of a history. Times are any monotonic clock's ticks.
#[derive(Clone, Debug)]
pub struct Operation<O> {
    pub invoked: u64,
    /// When its answer came; `None` if the answer was lost.
    pub answered: Option<u64>,
    pub op: O,
}

/// Why a history is not linearizable: the longest linearizable prefix found
/// and the operation that no order could place after it.
#[derive(Debug)]
pub struct Violation {
    /// How many operations the deepest attempt linearized.
    pub linearized: usize,
    /// The index (in the history given) of the answered operation that the
    /// deepest attempt could not linearize before its answer.
    pub stuck_at: usize,
}

/// What the search did, for the figures.
#[derive(Debug, Default)]
pub struct Searched {
    /// Configurations memoised.
    pub configurations: usize,
    /// Times the search undid a step.
    pub backtracks: usize,
}

/// One invocation or answer in the time-ordered list.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    /// For an invocation, the index of its answer's event.
    answer: Option<usize>,
}

/// Checks that `history` is linearizable from `initial`.
pub fn check<M: Model>(initial: M, history: &[Operation<M::Op>]) -> Result<Searched, Violation> {
    // Invocations and answers in time order; an invocation sorts before an
    // answer at the same tick (so the two count as concurrent), and lost
    // answers come last of all.
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * history.len());
    for (index, operation) in history.iter().enumerate() {
        order.push((operation.invoked, false, index));
        order.push((operation.answered.unwrap_or(u64::MAX), true, index));
    }
    order.sort_unstable();
    let mut answer_event = vec![0; history.len()];
    for (position, &(_, is_answer, op)) in order.iter().enumerate() {
        if is_answer {
            answer_event[op] = position + 1;
        }
    }
    // Events are numbered from 1; 0 is the head of the doubly linked list.
    let events: Vec<Event> = std::iter::once(Event {
        op: usize::MAX,
        answer: None,
    })
    .chain(order.iter().map(|&(_, is_answer, op)| Event {
        op,
        answer: (!is_answer).then_some(answer_event[op]),
    }))
    .collect();
    let end = events.len();
    let mut next: Vec<usize> = (1..=end).collect();
    let mut prev: Vec<usize> = (0..end).map(|i| i.wrapping_sub(1)).collect();

    let mut answered_left = history.iter().filter(|o| o.answered.is_some()).count();
    let mut linearized = vec![0u64; history.len().div_ceil(64)];
    let mut seen: HashSet<(Vec<u64>, M)> = HashSet::new();
    let mut stack: Vec<(usize, M)> = Vec::new();
    let mut state = initial;
    let mut searched = Searched::default();
    let mut deepest = Violation {
        linearized: 0,
        stuck_at: 0,
    };
    let mut entry = next[0];
    loop {
        if answered_left == 0 {
            searched.configurations = seen.len();
            return Ok(searched);
        }
        // Answered operations remain, so their answers are still listed
        // and the walk meets one before it runs off the end.
        let event = events[entry];
        if let Some(answer) = event.answer {
            let op = event.op;
            if let Some(after) = state.step(&history[op].op) {
                linearized[op / 64] |= 1 << (op % 64);
                if seen.insert((linearized.clone(), after.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, after)));
                    if history[op].answered.is_some() {
                        answered_left -= 1;
                    }
                    // Lift the invocation and its answer out of the list.
                    for lifted in [entry, answer] {
                        next[prev[lifted]] = next[lifted];
                        if next[lifted] < end {
                            prev[next[lifted]] = prev[lifted];
                        }
                    }
                    entry = next[0];
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            entry = next[entry];
        } else {
            // An answer whose operation is not linearized yet: undo the
            // last step and try the next candidate after it.
            if stack.len() >= deepest.linearized {
                deepest = Violation {
                    linearized: stack.len(),
                    stuck_at: event.op,
                };
            }
            let Some((call, before)) = stack.pop() else {
                return Err(deepest);
            };
            searched.backtracks += 1;
            state = before;
            let op = events[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            if history[op].answered.is_some() {
                answered_left += 1;
            }
            // Put the answer back, then the invocation (the reverse order of
            // lifting, so that each finds its neighbours in place).
            for restored in [events[call].answer.unwrap_or(call), call] {
                next[prev[restored]] = restored;
                if next[restored] < end {
                    prev[next[restored]] = restored;
                }
            }
            entry = next[call];
        }
    }
}
