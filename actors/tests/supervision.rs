//! The supervision tree: a crashing program actor is restarted from its spec; past the
//! restart intensity the registry escalates and the node supervisor restarts it with every
//! deployed program. The service actors (arbiter shards, fallback engine, memory tiers) are
//! restarted one-for-one within their own intensity, and keep serving their callers across
//! a restart; past the intensity the node supervisor stops.

// The helpers below are test code outside `#[test]` functions: a failed call there is a bug
// in the test, so unwrapping is the right answer.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eyeflow_actors::arbiter::Arbiter;
use eyeflow_actors::deployed::Deployed;
use eyeflow_actors::exec::Program;
use eyeflow_actors::fallbacks::FallbackDesk;
use eyeflow_actors::gates::{Decided, Fallbacks, ResourceGate};
use eyeflow_actors::ports::{MemoryError, NodeMemory};
use eyeflow_actors::supervision::{
    ActorInfo, NodeMsg, NodeSupervisor, ProgramMsg, RegistryMsg, RestartPolicy,
};
use eyeflow_actors::tiers::Tier;
use eyeflow_compiler::CompileOptions;
use ractor::{Actor, ActorRef, call};
use serde_json::{Value, json};

fn program(version: &str) -> Arc<Program> {
    let source = format!(
        "id: sup\nversion: {version}\ninstructions:\n  - {{id: done, op: RETURN, expression: \"1\"}}\n"
    );
    let options = CompileOptions {
        source_name: "sup.yaml".into(),
        compiled_by: "test".into(),
        compiled_at: 0,
    };
    let ir = eyeflow_compiler::compile(&source, &options).expect("compiles");
    Arc::new(Program::prepare(Arc::new(ir)).expect("prepares"))
}

async fn find(node: &ActorRef<NodeMsg>) -> Option<ActorRef<ProgramMsg>> {
    let registry = call!(node, NodeMsg::Registry).expect("registry");
    call!(registry, RegistryMsg::Find, "sup".to_owned(), None).expect("find")
}

/// Polls `count` until it reaches `expected` (a loaded machine may take a while to
/// restart an actor); panics after 10 s.
async fn settle<F, Fut>(expected: u64, mut count: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = count().await;
        if got == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "restart count stuck at {got}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_program_actors_are_restarted_then_the_registry_is() {
    let deployed = Deployed::new();
    let supervisor = NodeSupervisor {
        policy: RestartPolicy {
            max_restarts: 2,
            within: Duration::from_secs(60),
        },
        program_policy: RestartPolicy {
            max_restarts: 2,
            within: Duration::from_secs(60),
        },
        deployed: deployed.clone(),
    };
    let (node, _handle) = Actor::spawn(None, supervisor, Vec::new()).await.unwrap();
    call!(node, NodeMsg::Deploy, program("1.0.0"))
        .unwrap()
        .expect("deployed");
    call!(node, NodeMsg::Deploy, program("1.1.0"))
        .unwrap()
        .expect("deployed");

    let actor = find(&node).await.expect("deployed");
    let got = call!(actor, ProgramMsg::Get).unwrap();
    assert_eq!(got.version(), "1.1.0", "the highest version is found");

    // Two crashes: restarted each time, same program.
    for expected in 1..=2u64 {
        let actor = find(&node).await.unwrap();
        actor.cast(ProgramMsg::Crash).unwrap();
        let registry = call!(node, NodeMsg::Registry).unwrap();
        settle(expected, || async {
            call!(registry, RegistryMsg::Restarts).unwrap()
        })
        .await;
        let again = find(&node).await.expect("restarted");
        assert_ne!(again.get_id(), actor.get_id());
        assert_eq!(call!(again, ProgramMsg::Get).unwrap().version(), "1.1.0");
    }
    // The third within the window escalates: the node supervisor restarts the registry with
    // both programs.
    find(&node).await.unwrap().cast(ProgramMsg::Crash).unwrap();
    settle(1, || async {
        call!(node, NodeMsg::RegistryRestarts).unwrap()
    })
    .await;
    let registry = call!(node, NodeMsg::Registry).unwrap();
    let old = call!(
        registry,
        RegistryMsg::Find,
        "sup".to_owned(),
        Some("1.0.0".to_owned())
    )
    .unwrap();
    assert!(old.is_some(), "every deployed version is back");
    // The deployed table, written by the registry, kept both versions through it all.
    assert_eq!(
        deployed.get("sup", None).map(|p| p.version().to_owned()),
        Some("1.1.0".to_owned())
    );
    assert!(deployed.get("sup", Some("1.0.0")).is_some());
    assert_eq!(
        call!(
            node,
            NodeMsg::Undeploy,
            "sup".to_owned(),
            Some("1.1.0".to_owned())
        )
        .unwrap()
        .unwrap(),
        1
    );
    assert_eq!(
        deployed.get("sup", None).map(|p| p.version().to_owned()),
        Some("1.0.0".to_owned()),
        "undeployed from the table: the earlier version is active again"
    );
    node.stop(None);
}

/// Node memory in a map (the tier's connection in this test).
#[derive(Default)]
struct MapMemory(Mutex<HashMap<String, Value>>);

#[async_trait::async_trait]
impl NodeMemory for MapMemory {
    async fn get(&self, key: &str) -> Result<Option<Value>, MemoryError> {
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
    async fn set(&self, key: &str, value: &Value, _ttl: Duration) -> Result<(), MemoryError> {
        self.0.lock().unwrap().insert(key.to_owned(), value.clone());
        Ok(())
    }
}

async fn tree(node: &ActorRef<NodeMsg>) -> Vec<ActorInfo> {
    call!(node, NodeMsg::Tree).unwrap().unwrap()
}

async fn restarts(node: &ActorRef<NodeMsg>, path: &str) -> u64 {
    tree(node)
        .await
        .into_iter()
        .find(|a| a.path == path)
        .map_or(u64::MAX, |a| a.restarts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_actors_are_listed_restarted_and_keep_serving() {
    let policy = RestartPolicy {
        max_restarts: 2,
        within: Duration::from_secs(60),
    };
    let arbiter = Arbiter::new(2);
    let (fallbacks, fallback_spec) = FallbackDesk::new(policy);
    let memory: Arc<dyn NodeMemory> = Arc::new(MapMemory::default());
    let (tier, tier_spec) = Tier::<Arc<dyn NodeMemory>>::new(
        "node memory",
        "node/memory/node",
        Arc::new(move || Ok(memory.clone())),
        policy,
    );
    let mut services = arbiter.services(policy);
    services.push(fallback_spec);
    services.push(tier_spec);
    let supervisor = NodeSupervisor {
        policy,
        program_policy: policy,
        deployed: Deployed::new(),
    };
    let (node, handle) = Actor::spawn(None, supervisor, services).await.unwrap();

    let kinds: Vec<(String, &str)> = tree(&node)
        .await
        .into_iter()
        .map(|a| (a.path, a.kind))
        .collect();
    for (path, kind) in [
        ("node/arbiter/0", "arbiter"),
        ("node/arbiter/1", "arbiter"),
        ("node/fallback", "fallback"),
        ("node/memory/node", "memory"),
    ] {
        assert!(
            kinds.contains(&(path.to_owned(), kind)),
            "{path} missing from {kinds:?}"
        );
    }

    // A hold taken before both shards crash is still known after: never granted twice.
    let hold = arbiter
        .acquire("valve/1", "e1", 128, Duration::from_secs(1))
        .await
        .unwrap();
    for shard in ["node/arbiter/0", "node/arbiter/1"] {
        call!(node, NodeMsg::Restart, shard.to_owned())
            .unwrap()
            .unwrap();
        settle(1, || restarts(&node, shard)).await;
    }
    let refused = arbiter
        .acquire("valve/1", "e2", 128, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(refused.message.contains("held by e1"), "{refused}");
    drop(hold);
    let _hold = arbiter
        .acquire("valve/1", "e2", 128, Duration::from_secs(5))
        .await
        .unwrap();

    // A retry waiting on the fallback engine's timer when it crashes is answered by the
    // next incarnation.
    let desk = fallbacks.clone();
    let retry = tokio::spawn(async move {
        desk.decided(Decided {
            program: "p@1.0.0".into(),
            instruction: "read".into(),
            class: "unavailable",
            decision: "retry",
            delay: Some(Duration::from_millis(300)),
        })
        .await
    });
    call!(node, NodeMsg::Restart, "node/fallback".to_owned())
        .unwrap()
        .unwrap();
    settle(1, || restarts(&node, "node/fallback")).await;
    retry.await.unwrap().expect("answered after the restart");

    // The memory tier serves across a restart, from the same connection.
    tier.set("k", &json!(1), Duration::from_secs(60))
        .await
        .unwrap();
    call!(node, NodeMsg::Restart, "node/memory/node".to_owned())
        .unwrap()
        .unwrap();
    assert_eq!(tier.get("k").await.unwrap(), Some(json!(1)));
    settle(1, || restarts(&node, "node/memory/node")).await;
    let described = tree(&node)
        .await
        .into_iter()
        .find(|a| a.path == "node/memory/node")
        .and_then(|a| a.state)
        .unwrap();
    assert!(described.contains("operations started"), "{described}");

    // Past its intensity (2 restarts in the window) the node supervisor stops.
    call!(node, NodeMsg::Restart, "node/memory/node".to_owned())
        .unwrap()
        .unwrap();
    settle(2, || restarts(&node, "node/memory/node")).await;
    call!(node, NodeMsg::Restart, "node/memory/node".to_owned())
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("the node supervisor stops past the intensity")
        .unwrap();
}
