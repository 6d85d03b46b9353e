//! `idlegrid bench interference` end to end with tiny sizes: a real supervisor, a real client
//! computing `spin` and `memsweep` tasks, foreground programs in processes of their own. Checks
//! the figures are there and sane, not how large they are (a benchmark, not a timing test).

use std::process::Command;

use super::harness::CLIENT;

const TINY: &[&str] = &[
    "bench",
    "interference",
    "--pairs",
    "1",
    "--short-ms",
    "20",
    "--long-ms",
    "40",
    "--memory-mib",
    "8",
    "--memory-passes",
    "1",
    "--background-mib",
    "8",
    "--idle-after-ms",
    "100",
    // The owner watch would count the other tests' processes as the owner and keep the client
    // from computing; a bench run on a quiet machine uses the default.
    "--run-while-in-use",
];

#[test]
fn interference_bench_prints_its_slowdowns_as_one_json_object() {
    let out = Command::new(CLIENT)
        .args(TINY)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    for key in [
        "slowdown_short_percent",
        "slowdown_long_percent",
        "slowdown_memory_percent",
    ] {
        let v = report[key].as_f64().unwrap_or(f64::NAN);
        // A slowdown above -100 % means both runs finished in a positive time.
        assert!(v.is_finite() && v > -100.0, "{key}: {}", report[key]);
        let range = &report[key.replace("_percent", "_range_percent")];
        assert!(
            range[0].as_f64().unwrap() <= v && v <= range[1].as_f64().unwrap(),
            "{range}"
        );
    }
    assert_eq!(report["run_while_in_use"], true);
    let series = report["series"].as_array().unwrap();
    // Three programs against each of the two backgrounds, one pair each.
    assert_eq!(series.len(), 6, "{series:?}");
    let names: Vec<(&str, &str)> = series
        .iter()
        .map(|s| {
            (
                s["program"].as_str().unwrap(),
                s["background"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        names.contains(&("cpu-20ms", "spin")) && names.contains(&("memory", "memsweep")),
        "{names:?}"
    );
    for s in series {
        assert_eq!(s["alone_ms"].as_array().unwrap().len(), 1, "{s}");
        assert!(s["with_client_ms"][0].as_f64().unwrap() > 0.0, "{s}");
    }
}

#[test]
fn interference_bench_prints_a_table_and_refuses_zero_pairs() {
    let out = Command::new(CLIENT).args(TINY).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("slowdown_short_percent")
            && stdout.contains("slowdown_memory_percent")
            && stdout.contains("--run-while-in-use"),
        "{stdout}"
    );
    let bad = Command::new(CLIENT)
        .args(["bench", "interference", "--pairs", "0"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--pairs"));
}
