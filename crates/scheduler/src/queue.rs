//! Fair queueing of pending sandbox starts.
//!
//! Building a sandbox is the host's heaviest work (namespaces, cgroups, a
//! `/tmp` disk, a process), so only so many run at once. When more are
//! asked for, they wait in one queue per tenant and are let through in
//! round robin across the tenants waiting: a tenant asking for a thousand
//! starts at once delays another tenant's one start by at most one start
//! per tenant ahead of it, not by its thousand. A tenant of weight w is let
//! through w times per turn (every tenant weighs 1 unless told).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

use crate::weights::Weights;

#[derive(Debug, Default)]
struct Waiting {
    /// Starts free to begin now.
    available: usize,
    /// Each tenant's waiters, oldest first.
    queues: HashMap<String, VecDeque<oneshot::Sender<()>>>,
    /// Tenants with waiters, in the order they are served.
    turn: VecDeque<String>,
    /// Starts the tenant at the head of `turn` has had in its turn.
    served: u32,
    weights: Weights,
}

/// A gate of `capacity` concurrent starts, fair among tenants.
#[derive(Debug, Clone)]
pub struct StartGate {
    waiting: Arc<Mutex<Waiting>>,
}

/// One start's place through the gate; the next waiter goes when dropped.
#[derive(Debug)]
pub struct StartPermit {
    gate: StartGate,
}

impl Drop for StartPermit {
    fn drop(&mut self) {
        self.gate.release();
    }
}

impl StartGate {
    /// At most `capacity` starts at once (at least one).
    pub fn new(capacity: usize) -> StartGate {
        StartGate {
            waiting: Arc::new(Mutex::new(Waiting {
                available: capacity.max(1),
                ..Waiting::default()
            })),
        }
    }

    /// Sets `tenant`'s weight: starts let through per turn (at least 1).
    pub fn set_weight(&self, tenant: &str, weight: u32) {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        w.weights.set(tenant, weight);
    }

    /// Waits for `tenant`'s turn to start a sandbox.
    pub async fn enter(&self, tenant: &str) -> StartPermit {
        let receiver = {
            let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            if w.available > 0 && w.turn.is_empty() {
                w.available -= 1;
                return StartPermit { gate: self.clone() };
            }
            let (sender, receiver) = oneshot::channel();
            let queue = w.queues.entry(tenant.to_string()).or_default();
            let first = queue.is_empty();
            queue.push_back(sender);
            if first {
                w.turn.push_back(tenant.to_string());
            }
            receiver
        };
        // The permit is handed over by `release`: the sender is dropped
        // only with the gate, which this caller holds a clone of.
        let _ = receiver.await;
        StartPermit { gate: self.clone() }
    }

    /// Hands the freed start to the next tenant in turn, or keeps it.
    fn release(&self) {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(tenant) = w.turn.pop_front() {
            let weight = w.weights.of(&tenant);
            let Some(queue) = w.queues.get_mut(&tenant) else {
                w.served = 0;
                continue;
            };
            let next = queue.pop_front();
            let more = !queue.is_empty();
            w.served += 1;
            if !more {
                w.queues.remove(&tenant);
                w.served = 0;
            } else if w.served < weight {
                // Its turn goes on.
                w.turn.push_front(tenant);
            } else {
                w.served = 0;
                w.turn.push_back(tenant);
            }
            if let Some(waiter) = next {
                // A waiter that went away (its future dropped) cannot take
                // it: the next one in turn does.
                if waiter.send(()).is_ok() {
                    return;
                }
            }
        }
        w.available += 1;
    }

    /// Starts waiting now, all tenants together.
    pub fn waiting(&self) -> usize {
        let w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        w.queues.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// Lets spawned tasks run until they all wait.
    async fn settle() {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
    }

    /// The order in which `waiters` ((tenant, how many), queued in that
    /// order behind one start held by "x") pass a gate of one start.
    async fn order_through(gate: &StartGate, waiters: &[(&'static str, usize)]) -> Vec<String> {
        let order = Arc::new(StdMutex::new(Vec::new()));
        let first = gate.enter("x").await;
        let mut tasks = Vec::new();
        for &(tenant, n) in waiters {
            for i in 0..n {
                let (gate, order) = (gate.clone(), order.clone());
                tasks.push(tokio::spawn(async move {
                    let permit = gate.enter(tenant).await;
                    order.lock().unwrap().push(format!("{tenant}{i}"));
                    drop(permit);
                }));
                settle().await;
            }
        }
        assert_eq!(
            gate.waiting(),
            waiters.iter().map(|(_, n)| n).sum::<usize>()
        );
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(gate.waiting(), 0);
        order.lock().unwrap().clone()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_flood_of_starts_delays_another_tenants_start_by_one_turn() {
        let gate = StartGate::new(1);
        let order = order_through(&gate, &[("a", 5), ("b", 1)]).await;
        // a0 waited first; b0 is next in turn, ahead of a's four others.
        assert_eq!(order, ["a0", "b0", "a1", "a2", "a3", "a4"]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_heavier_tenant_is_let_through_as_often_as_its_weight_per_turn() {
        let gate = StartGate::new(1);
        gate.set_weight("a", 2);
        let order = order_through(&gate, &[("a", 4), ("b", 2)]).await;
        assert_eq!(order, ["a0", "a1", "b0", "a2", "a3", "b1"]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn at_most_capacity_starts_run_and_a_gone_waiter_passes_its_turn_on() {
        let gate = StartGate::new(2);
        let (one, two) = (gate.enter("a").await, gate.enter("a").await);
        let gone = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.enter("b").await })
        };
        settle().await;
        let next = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.enter("c").await })
        };
        settle().await;
        assert_eq!(gate.waiting(), 2);
        gone.abort();
        let _ = gone.await;
        drop(one);
        let third = next.await.unwrap();
        drop((two, third));
        // Both free again: two enter at once.
        let _both = (gate.enter("d").await, gate.enter("d").await);
    }
}
