//! A job's DAG as inline SVG: tasks in columns by dependency depth (a task sits one column right
//! of its deepest dependency), each column ordered by where its dependencies sit so that edges
//! cross less, boxes coloured by state (the stylesheet's `t-*` classes), critical tasks outlined
//! and the count of live replicas on each box. Pure layout and text.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::super::driver::TaskStatus;
use super::page::Esc;

const BOX_W: f64 = 118.0;
const BOX_H: f64 = 30.0;
const GAP_X: f64 = 44.0;
const GAP_Y: f64 = 10.0;
const PAD: f64 = 6.0;
/// Characters of a task id shown in its box (the whole id is in its tooltip).
const LABEL_CHARS: usize = 13;

/// Each task's column: 0 for tasks without dependencies, else one more than the deepest of
/// them. Dependencies outside the list are ignored; tasks on a cycle (a validated job has none)
/// end up in column 0 rather than looping.
pub fn depths(tasks: &[TaskStatus]) -> Vec<usize> {
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = tasks
        .iter()
        .map(|t| {
            t.deps
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    // Kahn's order: a task's depth is known once all of its dependencies' are.
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    let mut missing: Vec<usize> = deps.iter().map(Vec::len).collect();
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut depth = vec![0; tasks.len()];
    let mut ready: Vec<usize> = (0..tasks.len()).filter(|&i| missing[i] == 0).collect();
    while let Some(i) = ready.pop() {
        for &n in &dependents[i] {
            depth[n] = depth[n].max(depth[i] + 1);
            missing[n] -= 1;
            if missing[n] == 0 {
                ready.push(n);
            }
        }
    }
    depth
}

fn label(id: &str) -> String {
    if id.chars().count() <= LABEL_CHARS {
        id.to_owned()
    } else {
        let mut s: String = id.chars().take(LABEL_CHARS - 1).collect();
        s.push('…');
        s
    }
}

/// The SVG of a job's tasks (empty text for a job without tasks).
pub fn svg(tasks: &[TaskStatus]) -> String {
    if tasks.is_empty() {
        return String::new();
    }
    let depth = depths(tasks);
    let columns = depth.iter().max().map_or(1, |d| d + 1);
    let mut column: Vec<Vec<usize>> = vec![Vec::new(); columns];
    for (i, &d) in depth.iter().enumerate() {
        column[d].push(i);
    }
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    // Rows column by column; each column ordered by the mean row of its tasks' dependencies.
    let mut row = vec![0.0f64; tasks.len()];
    for c in column.iter_mut() {
        let key = |i: usize| {
            let rows: Vec<f64> = tasks[i]
                .deps
                .iter()
                .filter_map(|d| index.get(d.as_str()).map(|&j| row[j]))
                .collect();
            if rows.is_empty() {
                i as f64
            } else {
                rows.iter().sum::<f64>() / rows.len() as f64
            }
        };
        let mut keyed: Vec<(f64, usize)> = c.iter().map(|&i| (key(i), i)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        *c = keyed.into_iter().map(|(_, i)| i).collect();
        for (r, &i) in c.iter().enumerate() {
            row[i] = r as f64;
        }
    }
    let rows = column.iter().map(Vec::len).max().unwrap_or(1);
    let width = PAD * 2.0 + columns as f64 * BOX_W + (columns - 1) as f64 * GAP_X;
    let height = PAD * 2.0 + rows as f64 * BOX_H + (rows - 1) as f64 * GAP_Y;
    // Each column centred vertically.
    let y_of = |i: usize| {
        let n = column[depth[i]].len() as f64;
        let offset = (rows as f64 - n) * (BOX_H + GAP_Y) / 2.0;
        PAD + offset + row[i] * (BOX_H + GAP_Y)
    };
    let x_of = |i: usize| PAD + depth[i] as f64 * (BOX_W + GAP_X);

    let mut s = String::with_capacity(tasks.len() * 400);
    let _ = write!(
        s,
        "<svg class=\"dag\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width:.0} {height:.0}\" \
         width=\"{width:.0}\" height=\"{height:.0}\" role=\"img\" aria-label=\"the job's tasks and their dependencies\"><g class=\"edges\">"
    );
    for (i, t) in tasks.iter().enumerate() {
        for d in &t.deps {
            let Some(&j) = index.get(d.as_str()) else {
                continue;
            };
            let (x1, y1) = (x_of(j) + BOX_W, y_of(j) + BOX_H / 2.0);
            let (x2, y2) = (x_of(i), y_of(i) + BOX_H / 2.0);
            let mid = (x1 + x2) / 2.0;
            let _ = write!(
                s,
                "<path d=\"M{x1:.1},{y1:.1} C{mid:.1},{y1:.1} {mid:.1},{y2:.1} {x2:.1},{y2:.1}\"/>"
            );
        }
    }
    s.push_str("</g>");
    for (i, t) in tasks.iter().enumerate() {
        let (x, y) = (x_of(i), y_of(i));
        let live = t
            .replicas
            .iter()
            .filter(|r| matches!(r.worker_state, "live" | "reconnecting"))
            .count();
        let _ = write!(
            s,
            "<g class=\"task t-{}{}\" data-task=\"{}\"><title>{}: {}{}, {} replica(s)</title>\
             <rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"4\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            t.state,
            if t.critical { " crit" } else { "" },
            Esc(&t.id),
            Esc(&t.id),
            t.state,
            if t.critical { ", critical" } else { "" },
            t.replicas.len(),
            x + 7.0,
            y + BOX_H / 2.0 + 4.0,
            Esc(&label(&t.id))
        );
        if !t.replicas.is_empty() {
            let _ = write!(
                s,
                "<text class=\"replicas\" x=\"{:.1}\" y=\"{:.1}\">×{live}</text>",
                x + BOX_W - 6.0,
                y + BOX_H / 2.0 + 4.0
            );
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, deps: &[&str]) -> TaskStatus {
        TaskStatus {
            id: id.into(),
            state: "waiting",
            deps: deps.iter().map(|d| (*d).to_owned()).collect(),
            critical: false,
            critical_reasons: Vec::new(),
            planned_replicas: 1,
            failures: 0,
            replicas: Vec::new(),
        }
    }

    #[test]
    fn a_task_sits_one_column_right_of_its_deepest_dependency() {
        let tasks = [
            task("join", &["b", "a"]),
            task("a", &[]),
            task("b", &["a"]),
            task("lone", &["missing"]),
        ];
        assert_eq!(depths(&tasks), [2, 0, 1, 0]);
    }

    #[test]
    fn a_cycle_does_not_hang_the_layout() {
        let tasks = [task("x", &["y"]), task("y", &["x"])];
        assert_eq!(depths(&tasks), [0, 0]);
        assert!(svg(&tasks).contains("data-task=\"x\""));
    }

    #[test]
    fn task_ids_are_escaped_in_the_drawing() {
        let svg = svg(&[task("<script>alert(1)</script>", &[])]);
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
    }
}
