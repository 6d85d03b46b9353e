//! The 14-day bar chart of CPU time given, drawn with egui's painter.

use eframe::egui;

use crate::client::snapshot::DayTotal;

/// Bars of CPU hours per day, oldest left, with the tallest day's figure and the first and last
/// dates under them.
pub fn cpu_per_day_ui(ui: &mut egui::Ui, days: &[DayTotal]) {
    let width = ui.available_width().clamp(200.0, 640.0);
    let (rect, response) = ui.allocate_exact_size(egui::vec2(width, 110.0), egui::Sense::hover());
    let painter = ui.painter_at(rect);
    let visuals = ui.visuals();
    painter.rect_filled(rect, 4.0, visuals.extreme_bg_color);
    let max = days.iter().map(|d| d.cpu.as_secs_f64()).fold(0.0, f64::max);
    let text = visuals.text_color();
    let font = egui::FontId::proportional(11.0);
    let plot = rect.shrink2(egui::vec2(8.0, 18.0));
    let n = days.len().max(1) as f32;
    let slot = plot.width() / n;
    let bar_colour = visuals.selection.bg_fill;
    for (i, d) in days.iter().enumerate() {
        let h = if max > 0.0 {
            (d.cpu.as_secs_f64() / max) as f32 * plot.height()
        } else {
            0.0
        };
        let x0 = plot.left() + i as f32 * slot + slot * 0.15;
        let bar = egui::Rect::from_min_max(
            egui::pos2(x0, plot.bottom() - h.max(1.0)),
            egui::pos2(x0 + slot * 0.7, plot.bottom()),
        );
        painter.rect_filled(bar, 2.0, bar_colour);
    }
    painter.text(
        rect.left_top() + egui::vec2(8.0, 3.0),
        egui::Align2::LEFT_TOP,
        format!(
            "max {}",
            super::status_ui::hours(std::time::Duration::from_secs_f64(max))
        ),
        font.clone(),
        text,
    );
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        painter.text(
            rect.left_bottom() + egui::vec2(8.0, -3.0),
            egui::Align2::LEFT_BOTTOM,
            &first.date,
            font.clone(),
            text,
        );
        painter.text(
            rect.right_bottom() + egui::vec2(-8.0, -3.0),
            egui::Align2::RIGHT_BOTTOM,
            &last.date,
            font,
            text,
        );
    }
    if let Some(pos) = response.hover_pos() {
        let i = ((pos.x - plot.left()) / slot).floor();
        if i >= 0.0
            && let Some(d) = days.get(i as usize)
        {
            response.on_hover_text(format!(
                "{}: {} CPU, {} tasks",
                d.date,
                super::status_ui::hours(d.cpu),
                d.tasks
            ));
        }
    }
}
