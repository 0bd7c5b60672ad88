//! The cost of one actor hop (a ractor `call!` round trip to a program actor) against a
//! direct call: from a worker thread (`block_on`, as the node's executions would), and from
//! a task of the actors' own runtime (as one actor calls another, and as an execution is
//! admitted at each instruction by its instruction actor).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use eyeflow_actors::exec::Program;
use eyeflow_actors::supervision::{ProgramActor, ProgramMsg, RestartPolicy};
use eyeflow_compiler::CompileOptions;
use ractor::{Actor, call};

fn program() -> Arc<Program> {
    let source =
        "id: hop\nversion: 1.0.0\ninstructions:\n  - {id: done, op: RETURN, expression: \"1\"}\n";
    let options = CompileOptions {
        source_name: "hop.yaml".into(),
        compiled_by: "bench".into(),
        compiled_at: 0,
    };
    let ir = eyeflow_compiler::compile(source, &options).expect("compiles");
    Arc::new(Program::prepare(Arc::new(ir)).expect("prepares"))
}

fn hop(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let program = program();
    let (actor, _) = runtime
        .block_on(Actor::spawn(
            None,
            ProgramActor {
                policy: RestartPolicy::default(),
            },
            program.clone(),
        ))
        .expect("spawn");
    let mut group = c.benchmark_group("program_lookup");
    group.bench_function("actor_hop", |b| {
        b.iter(|| {
            black_box(
                runtime
                    .block_on(async { call!(actor, ProgramMsg::Get) })
                    .expect("reply"),
            )
        })
    });
    // The same call from a task of the actors' runtime (how an actor calls another):
    // no thread hand-off, one task switch each way.
    group.bench_function("actor_hop_in_runtime", |b| {
        b.iter_custom(|iters| {
            let actor = actor.clone();
            runtime
                .block_on(runtime.spawn(async move {
                    let started = Instant::now();
                    for _ in 0..iters {
                        black_box(call!(actor, ProgramMsg::Get).expect("reply"));
                    }
                    started.elapsed()
                }))
                .expect("task")
        })
    });
    // An execution's admission at an instruction by its instruction actor, from a task of
    // the runtime: what each instruction of an execution costs on top of its work.
    let stations = program
        .stations()
        .expect("the program actor attached its stations");
    group.bench_function("instruction_enter_in_runtime", |b| {
        b.iter_custom(|iters| {
            let stations = stations.clone();
            runtime
                .block_on(runtime.spawn(async move {
                    let started = Instant::now();
                    for _ in 0..iters {
                        stations.enter(0).await.expect("admitted");
                    }
                    started.elapsed()
                }))
                .expect("task")
        })
    });
    group.bench_function("direct", |b| {
        b.iter(|| black_box(Arc::clone(black_box(&program))))
    });
    group.finish();
    actor.stop(None);
}

criterion_group!(benches, hop);
criterion_main!(benches);
