//! The supervision tree: a crashing program actor is restarted from its spec; past the
//! restart intensity the registry escalates and the node supervisor restarts it with every
//! deployed program.

use std::sync::Arc;
use std::time::Duration;

use eyeflow_actors::exec::Program;
use eyeflow_actors::supervision::{
    NodeMsg, NodeSupervisor, ProgramMsg, RegistryMsg, RestartPolicy,
};
use eyeflow_compiler::CompileOptions;
use ractor::{Actor, ActorRef, call};

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
    let supervisor = NodeSupervisor {
        policy: RestartPolicy {
            max_restarts: 2,
            within: Duration::from_secs(60),
        },
        program_policy: RestartPolicy {
            max_restarts: 2,
            within: Duration::from_secs(60),
        },
    };
    let (node, _handle) = Actor::spawn(None, supervisor, ()).await.unwrap();
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
    assert_eq!(
        call!(find(&node).await.unwrap(), ProgramMsg::Get)
            .unwrap()
            .version(),
        "1.1.0"
    );
    node.stop(None);
}
