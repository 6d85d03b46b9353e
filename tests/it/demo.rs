//! `idlegrid-supervisor demo` renders a correct image through the whole system.

use idlegrid::runtime::mandelbrot::render_reference;

use crate::harness::{SUPERVISOR, shared_machine};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_writes_the_same_png_as_a_single_machine_render_and_a_report() {
    let _machine = shared_machine().await;
    let out = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(SUPERVISOR)
        .args([
            "demo",
            "--width",
            "320",
            "--height",
            "200",
            "--tiles",
            "8",
            "--max-iter",
            "3000",
            "--out",
        ])
        .arg(out.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let png = std::fs::read(out.path().join("mandelbrot.png")).unwrap();
    let job = idlegrid::demo::mandelbrot_job(320, 200, 8, 3000);
    let reference = render_reference(&job.tasks[0].input).unwrap();
    assert!(
        png == reference,
        "the distributed render differs from the reference"
    );
    assert!(stdout.contains("killing worker"), "{stdout}");
    assert!(
        stdout.contains("job job-1 (mandelbrot): completed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("makespan")
            && stdout.contains("replicas started")
            && stdout.contains("cost"),
        "{stdout}"
    );
}
