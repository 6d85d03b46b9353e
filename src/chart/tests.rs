use super::*;

use BarOutcome::{Cancelled, Failed, Lost, Won};

struct Image {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Image {
    fn read(path: &Path) -> Image {
        let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
        let mut reader = png::Decoder::new(file).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(
            (info.color_type, info.bit_depth),
            (png::ColorType::Rgb, png::BitDepth::Eight)
        );
        buf.truncate(info.buffer_size());
        Image {
            width: info.width,
            height: info.height,
            rgb: buf,
        }
    }

    /// Pixels of exactly this colour (fills are not anti-aliased, so bars match exactly).
    fn count(&self, colour: RGBColor) -> usize {
        self.rgb
            .chunks_exact(3)
            .filter(|p| p[0] == colour.0 && p[1] == colour.1 && p[2] == colour.2)
            .count()
    }
}

/// Pixels of a colour that its legend swatch alone accounts for.
const IN_LEGEND: usize = (SWATCH * SWATCH) as usize;

fn row(label: &str, bars: &[(f64, f64, BarOutcome)], busy: &[(f64, f64)]) -> GanttRow {
    GanttRow {
        label: label.to_string(),
        bars: bars
            .iter()
            .map(|&(start_s, end_s, outcome)| GanttBar {
                start_s,
                end_s,
                outcome,
            })
            .collect(),
        busy: busy.to_vec(),
    }
}

fn series(name: &str, values: &[f64]) -> Series {
    Series {
        name: name.to_string(),
        values: values.to_vec(),
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn gantt_chart_is_a_png_showing_each_outcome_and_busy_spells() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.png");
    let rows = vec![
        row("w0", &[(0.0, 10.0, Won), (10.0, 14.0, Cancelled)], &[]),
        row("w1", &[(2.0, 8.0, Lost)], &[(1.0, 9.0)]),
        row("w2", &[(3.0, 5.0, Failed), (6.0, 20.0, Won)], &[]),
    ];
    gantt_png(&path, "three workers", &rows).unwrap();

    let image = Image::read(&path);
    assert_eq!(image.width, GANTT_WIDTH);
    assert!(
        (3 * 24..600).contains(&image.height),
        "height {}",
        image.height
    );
    for (name, colour) in [
        ("won", WON),
        ("cancelled", CANCELLED),
        ("lost", LOST),
        ("failed", FAILED),
        ("busy", BUSY),
    ] {
        assert!(
            image.count(colour) > IN_LEGEND + 100,
            "no {name} pixels drawn"
        );
    }
}

#[test]
fn gantt_chart_of_a_clean_run_has_no_loss_colours() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clean.png");
    let rows = vec![
        row("w0", &[(0.0, 10.0, Won)], &[]),
        row("w1", &[(0.0, 12.0, Won)], &[]),
    ];
    gantt_png(&path, "clean", &rows).unwrap();
    let image = Image::read(&path);
    assert!(image.count(WON) > IN_LEGEND + 100);
    for colour in [CANCELLED, LOST, FAILED, BUSY] {
        assert_eq!(
            image.count(colour),
            IN_LEGEND,
            "{colour:?} drawn without a bar of it"
        );
    }
}

#[test]
fn gantt_bar_length_follows_its_duration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lengths.png");
    let rows = vec![
        row("long", &[(0.0, 20.0, Won)], &[]),
        row("short", &[(0.0, 10.0, Lost)], &[]),
        row("instant", &[(5.0, 5.0, Failed)], &[]),
    ];
    gantt_png(&path, "lengths", &rows).unwrap();
    let image = Image::read(&path);
    let bar_pixels = |colour| (image.count(colour) - IN_LEGEND) as f64;
    let ratio = bar_pixels(WON) / bar_pixels(LOST);
    assert!((1.9..2.1).contains(&ratio), "won/lost pixels {ratio}");
    let instant = bar_pixels(FAILED);
    assert!(
        (5.0..30.0).contains(&instant),
        "a zero-length bar drew {instant} pixels, not a thin line"
    );
}

#[test]
fn gantt_of_400_workers_is_capped_in_height_and_keeps_the_last_worker() {
    let dir = tempfile::tempdir().unwrap();
    let many: Vec<GanttRow> = (0..400)
        .map(|i| {
            let outcome = if i == 399 { Lost } else { Won };
            row(
                &format!("worker-{i}"),
                &[(0.0, 5.0 + i as f64, outcome)],
                &[],
            )
        })
        .collect();
    let at_cap: Vec<GanttRow> = many[..GANTT_MAX_ROWS].to_vec();

    let many_path = dir.path().join("many.png");
    let cap_path = dir.path().join("cap.png");
    gantt_png(&many_path, "400 workers", &many).unwrap();
    gantt_png(&cap_path, "100 workers", &at_cap).unwrap();
    let many_image = Image::read(&many_path);
    let cap_image = Image::read(&cap_path);

    assert_eq!(many_image.height, cap_image.height);
    assert!(many_image.height < 2000, "height {}", many_image.height);
    assert!(
        many_image.count(LOST) > IN_LEGEND + 100,
        "the last worker's row is missing"
    );
    assert_eq!(cap_image.count(LOST), IN_LEGEND);
}

#[test]
fn sampled_rows_are_evenly_spaced_distinct_and_keep_both_ends() {
    assert_eq!(sampled_rows(7, 100), (0..7).collect::<Vec<_>>());
    let picked = sampled_rows(400, 100);
    assert_eq!(picked.len(), 100);
    assert_eq!((picked[0], picked[99]), (0, 399));
    let gaps: Vec<usize> = picked.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|&g| g == 4 || g == 5), "{gaps:?}");
    let picked = sampled_rows(101, 100);
    assert!(picked.windows(2).all(|w| w[0] < w[1]));
    assert_eq!((picked.len(), picked[99]), (100, 100));
}

#[test]
fn gantt_bad_input_is_refused_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.png");
    let ok = row("w0", &[(0.0, 1.0, Won)], &[]);
    let cases: Vec<(Vec<GanttRow>, &[&str])> = vec![
        (vec![], &["no rows"]),
        (vec![row("idle", &[], &[])], &["none of the 1 rows"]),
        (
            vec![
                ok.clone(),
                row("w7", &[(0.0, 1.0, Won), (5.0, 4.0, Lost)], &[]),
            ],
            &["\"w7\" bar 1", "ends before it starts"],
        ),
        (
            vec![row("w3", &[(f64::NAN, 1.0, Won)], &[])],
            &["\"w3\" bar 0", "not a finite"],
        ),
        (
            vec![row("w4", &[(0.0, f64::INFINITY, Won)], &[])],
            &["\"w4\" bar 0", "not a finite"],
        ),
        (
            vec![row("w5", &[(0.0, 1.0, Won)], &[(-2.0, 1.0)])],
            &["\"w5\" busy spell 0", "before 0"],
        ),
    ];
    for (rows, expected) in cases {
        let err = gantt_png(&path, "bad", &rows).unwrap_err();
        assert!(matches!(err.problem, ChartProblem::BadInput(_)), "{err}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        for part in expected {
            assert!(text.contains(part), "{text:?} lacks {part:?}");
        }
        assert!(!path.exists(), "a file was written for bad input");
    }
}

#[test]
fn grouped_bars_chart_is_a_png_with_each_series_and_the_reference_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table.png");
    let groups = names(&["steady", "churn", "evening"]);
    let all = vec![
        series("fifo", &[1.8, 3.2, 2.4]),
        series("redundant", &[1.2, 1.6, 1.4]),
        series("speculative", &[1.1, 1.3, 1.2]),
        series("qos", &[1.05, 1.1, 1.0]),
    ];
    grouped_bars_png(&path, "makespan / ideal", "ratio", &groups, &all, Some(1.0)).unwrap();
    let image = Image::read(&path);
    assert_eq!(image.height, BARS_HEIGHT);
    assert!(image.width >= 800, "width {}", image.width);
    for (j, s) in all.iter().enumerate() {
        assert!(
            image.count(SERIES_COLOURS[j]) > IN_LEGEND + 500,
            "{} not drawn",
            s.name
        );
    }
    assert!(image.count(REFERENCE) > 500, "no reference line");

    let plain = dir.path().join("plain.png");
    grouped_bars_png(&plain, "makespan / ideal", "ratio", &groups, &all, None).unwrap();
    assert_eq!(Image::read(&plain).count(REFERENCE), 0);
}

#[test]
fn grouped_bar_heights_follow_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("heights.png");
    let all = vec![series("one", &[1.0]), series("two", &[2.0])];
    grouped_bars_png(&path, "heights", "value", &names(&["g"]), &all, None).unwrap();
    let image = Image::read(&path);
    let bar_pixels = |colour| (image.count(colour) - IN_LEGEND) as f64;
    let ratio = bar_pixels(SERIES_COLOURS[1]) / bar_pixels(SERIES_COLOURS[0]);
    assert!((1.9..2.1).contains(&ratio), "two/one pixels {ratio}");
}

#[test]
fn grouped_bars_bad_input_is_refused_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.png");
    let groups = names(&["a", "b"]);
    let good = vec![series("p", &[1.0, 2.0])];
    // groups, series, reference line, what the error must say
    type Case = (
        Vec<String>,
        Vec<Series>,
        Option<f64>,
        &'static [&'static str],
    );
    let cases: Vec<Case> = vec![
        (vec![], good.clone(), None, &["no groups"]),
        (groups.clone(), vec![], None, &["no series"]),
        (
            groups.clone(),
            vec![series("p", &[1.0, 2.0]); 9],
            None,
            &["9 series", "at most 8"],
        ),
        (
            groups.clone(),
            vec![series("short", &[1.0])],
            None,
            &["\"short\" has 1 values for 2 groups"],
        ),
        (
            groups.clone(),
            vec![series("nan", &[1.0, f64::NAN])],
            None,
            &["\"nan\" group \"b\"", "NaN"],
        ),
        (
            groups.clone(),
            vec![series("neg", &[-1.0, 1.0])],
            None,
            &["\"neg\" group \"a\"", "-1"],
        ),
        (
            groups.clone(),
            good.clone(),
            Some(f64::NAN),
            &["reference line NaN"],
        ),
        (groups.clone(), good, Some(-1.0), &["reference line -1"]),
    ];
    for (groups, all, reference, expected) in cases {
        let err = grouped_bars_png(&path, "bad", "y", &groups, &all, reference).unwrap_err();
        assert!(matches!(err.problem, ChartProblem::BadInput(_)), "{err}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        for part in expected {
            assert!(text.contains(part), "{text:?} lacks {part:?}");
        }
        assert!(!path.exists(), "a file was written for bad input");
    }
}

#[test]
fn writing_to_an_unwritable_path_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file as the parent directory: refused even for root.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let path = file.join("chart.png");

    let err = gantt_png(&path, "t", &[row("w", &[(0.0, 1.0, Won)], &[])]).unwrap_err();
    assert!(matches!(err.problem, ChartProblem::Write(_)), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );

    let err = grouped_bars_png(
        &path,
        "t",
        "y",
        &names(&["g"]),
        &[series("s", &[1.0])],
        None,
    )
    .unwrap_err();
    assert!(matches!(err.problem, ChartProblem::Write(_)), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn chart_titles_are_drawn_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let rows = vec![row("w0", &[(0.0, 10.0, Won)], &[])];
    let dark_in_title_band = |title: &str| {
        let path = dir.path().join("titled.png");
        gantt_png(&path, title, &rows).unwrap();
        let image = Image::read(&path);
        let band = &image.rgb[..(image.width * 40 * 3) as usize];
        band.chunks_exact(3)
            .filter(|p| p.iter().all(|&c| c < 100))
            .count()
    };
    let untitled = dark_in_title_band("");
    let titled = dark_in_title_band("Simulated run: churn scenario, qos policy, 12 workers");
    assert_eq!(untitled, 0);
    assert!(titled > 500, "{titled} dark pixels in the title band");
}
