//! `idlegrid-supervisor demo`: the whole system on one machine. An embedded supervisor on a free
//! port with a temporary data dir, local headless worker processes, and a Mandelbrot job (a
//! critical seed task that plans the render, tiles that depend on it, a critical assemble task
//! that depends on them all). Midway one worker is killed to show the reissue. Ends with the PNG
//! and the job report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::job::{Estimates, JobSpec, TaskSpec};
use crate::local::LocalWorker;
use crate::operator::Operator;
use crate::proto::{TaskId, WorkerId};
use crate::sched;
use crate::supervisor::{self, Event, Supervisor};

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Local worker processes to start.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=32))]
    pub workers: u32,
    /// Tiles the image is split into.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..=256))]
    pub tiles: u32,
    #[arg(long, default_value_t = 1200, value_parser = clap::value_parser!(u32).range(16..=8192))]
    pub width: u32,
    #[arg(long, default_value_t = 800, value_parser = clap::value_parser!(u32).range(16..=8192))]
    pub height: u32,
    /// Iteration limit per pixel: more is slower and finer.
    #[arg(long, default_value_t = 8000, value_parser = clap::value_parser!(u32).range(16..=65535))]
    pub max_iter: u32,
    /// Directory for mandelbrot.png.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Do not kill a worker midway.
    #[arg(long)]
    pub no_kill: bool,
    /// Print the job report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The demo job: plan, tiles, assemble.
pub fn mandelbrot_job(width: u32, height: u32, tiles: u32, max_iter: u32) -> JobSpec {
    let view = serde_json::json!({
        "width": width, "height": height,
        "center_re": -0.743_643_887_037_151, "center_im": 0.131_825_904_205_33,
        "span_re": 0.012, "max_iter": max_iter, "tiles": tiles,
    });
    let estimates = |cpu_s, mem_mb| Estimates {
        cpu_s,
        mem_mb,
        ..Estimates::default()
    };
    let mut tasks = vec![TaskSpec {
        critical: Some(true),
        estimates: estimates(0.01, 0),
        ..TaskSpec::new("seed", "mandelbrot_view", view)
    }];
    let tile_ids: Vec<TaskId> = (0..tiles).map(|i| TaskId(format!("tile-{i:02}"))).collect();
    for (i, id) in tile_ids.iter().enumerate() {
        tasks.push(TaskSpec {
            deps: vec!["seed".into()],
            estimates: estimates(0.5, 16),
            ..TaskSpec::new(id.clone(), "mandelbrot", serde_json::json!({ "index": i }))
        });
    }
    let mut deps = vec![TaskId::from("seed")];
    deps.extend(tile_ids);
    tasks.push(TaskSpec {
        deps,
        critical: Some(true),
        estimates: estimates(0.2, 64),
        ..TaskSpec::new(
            "assemble",
            "mandelbrot_assemble",
            serde_json::json!({ "file": "mandelbrot.png" }),
        )
    });
    JobSpec {
        name: "mandelbrot".into(),
        tasks,
        ..Default::default()
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let data = tempfile::Builder::new()
        .prefix("idlegrid-demo-")
        .tempdir()
        .context("cannot create a temporary data dir")?;
    let cfg = supervisor::Config::with_tokens_in(
        data.path(),
        sched::Config {
            seed: 7,
            ..sched::Config::default()
        },
    )?;
    let operator_token = cfg.operator_token.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind a local port")?;
    let sup = Supervisor::start(listener, cfg).await?;
    let addr = sup.addr();
    let mut events = sup.subscribe();
    println!(
        "supervisor on http://{addr} (data in {})",
        data.path().display()
    );

    let server = format!("ws://{addr}/worker");
    let token_file = data.path().join("worker.token");
    let mut workers: BTreeMap<String, LocalWorker> = BTreeMap::new();
    for i in 1..=args.workers {
        let name = format!("demo-{i}");
        let log = data.path().join(format!("{name}.log"));
        let worker_data = data.path().join(format!("{name}.client"));
        let w = LocalWorker::spawn(&server, &token_file, &name, 1, &worker_data, &log)
            .with_context(|| format!("cannot start worker {name}"))?;
        workers.insert(name, w);
    }
    let mut names: BTreeMap<WorkerId, String> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while names.len() < args.workers as usize {
        match supervisor::next_event(&mut events, deadline).await? {
            Event::WorkerJoined { worker, name } => {
                names.insert(worker, name);
            }
            _ => continue,
        }
    }
    println!(
        "{} headless workers joined: {}",
        names.len(),
        names.values().cloned().collect::<Vec<_>>().join(", ")
    );

    let op = Operator::new(&format!("http://{addr}"), &operator_token)?;
    let spec = mandelbrot_job(args.width, args.height, args.tiles, args.max_iter);
    let job = op.submit(&spec).await?;
    println!(
        "job {job}: a {}x{} Mandelbrot render in {} tasks (seed -> {} tiles -> assemble; seed and assemble are critical)",
        args.width,
        args.height,
        spec.tasks.len(),
        args.tiles
    );

    let started = Instant::now();
    let mut running: BTreeMap<TaskId, BTreeSet<WorkerId>> = BTreeMap::new();
    let mut tiles_done = 0u32;
    let mut killed: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    let state = loop {
        let ev = supervisor::next_event(&mut events, deadline).await?;
        let name_of = |w: &WorkerId| names.get(w).cloned().unwrap_or_else(|| w.0.clone());
        match ev {
            Event::Assigned {
                job: j,
                task,
                worker,
                reason,
                detail,
                ..
            } if j == job => {
                let at = started.elapsed().as_secs_f64();
                match (reason, detail) {
                    ("reissue", Some(why)) => println!(
                        "  +{at:.3} s  {task} reissued to {}: {why}",
                        name_of(&worker)
                    ),
                    ("redundant", _) => println!(
                        "  +{at:.3} s  {task} also on {} (critical: redundant replica)",
                        name_of(&worker)
                    ),
                    _ if task.0 == "seed" || task.0 == "assemble" => {
                        println!("  +{at:.3} s  {task} on {}", name_of(&worker))
                    }
                    _ => {}
                }
                running.entry(task).or_default().insert(worker);
            }
            Event::TaskDone {
                job: j,
                task,
                worker,
            } if j == job => {
                running.remove(&task);
                if task.0.starts_with("tile-") {
                    tiles_done += 1;
                }
                if task.0 == "seed" || task.0 == "assemble" {
                    println!(
                        "  +{:.3} s  {task} done first on {}",
                        started.elapsed().as_secs_f64(),
                        name_of(&worker)
                    );
                }
                if !args.no_kill && killed.is_none() && tiles_done >= args.tiles / 2 {
                    // A worker in the middle of a tile: its task must be reissued.
                    let victim = running
                        .iter()
                        .filter(|(t, _)| t.0.starts_with("tile-"))
                        .find_map(|(t, ws)| ws.iter().next().map(|w| (t.clone(), w.clone())));
                    if let Some((task, w)) = victim {
                        let name = name_of(&w);
                        if let Some(proc_) = workers.remove(&name) {
                            println!(
                                "  +{:.3} s  {tiles_done}/{} tiles done; killing worker {name} (pid {}, SIGKILL) while it computes {task}",
                                started.elapsed().as_secs_f64(),
                                args.tiles,
                                proc_.pid()
                            );
                            proc_.kill();
                            killed = Some(name);
                        }
                    }
                }
            }
            Event::WorkerLost { worker, cause } => {
                println!(
                    "  +{:.3} s  worker {} lost: {cause}",
                    started.elapsed().as_secs_f64(),
                    name_of(&worker)
                );
            }
            Event::JobFinished { job: j, state } if j == job => break state,
            _ => {}
        }
    };

    let report = op.report(&job).await?;
    if state != "completed" {
        print!("{}", report.to_text());
        bail!("the demo job ended {state}");
    }
    let png = op.file(&job, &TaskId::from("assemble")).await?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let path = args.out.join("mandelbrot.png");
    std::fs::write(&path, &png).with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "wrote {} ({} bytes, {}x{})",
        path.display(),
        png.len(),
        args.width,
        args.height
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    // The supervisor goes first, so that the workers' ends are not reported as losses.
    sup.shutdown().await?;
    for (_, w) in workers {
        w.kill();
    }
    Ok(())
}
