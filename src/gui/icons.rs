//! The tray's and the window's icons: PNGs drawn by `scripts/tray-icons.sh` into `assets/tray/`
//! and `assets/ui/`, embedded in the binary and decoded to RGBA here.

use super::label::TrayState;

const COMPUTING: &[u8] = include_bytes!("../../assets/tray/computing.png");
const WAITING: &[u8] = include_bytes!("../../assets/tray/waiting.png");
const OWNER: &[u8] = include_bytes!("../../assets/tray/owner.png");
const USER: &[u8] = include_bytes!("../../assets/tray/user.png");
const CONDITION: &[u8] = include_bytes!("../../assets/tray/condition.png");
const DISCONNECTED: &[u8] = include_bytes!("../../assets/tray/disconnected.png");
const APP: &[u8] = include_bytes!("../../assets/ui/idlegrid.png");

/// An image as RGBA bytes, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgba {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// The PNG of the tray icon for `state`.
pub fn tray_png(state: TrayState) -> &'static [u8] {
    match state {
        TrayState::Computing => COMPUTING,
        TrayState::Waiting => WAITING,
        TrayState::Owner => OWNER,
        TrayState::User => USER,
        TrayState::Condition => CONDITION,
        TrayState::Disconnected => DISCONNECTED,
    }
}

pub fn app_png() -> &'static [u8] {
    APP
}

/// Decodes an embedded PNG (8-bit RGB or RGBA, as the script writes them).
pub fn decode(png_bytes: &[u8]) -> Result<Rgba, String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| "image too large".to_owned())?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    buf.truncate(info.buffer_size());
    let pixels = match info.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g, 255]).collect(),
        png::ColorType::Indexed => return Err("indexed PNG not expanded".into()),
    };
    Ok(Rgba {
        width: info.width,
        height: info.height,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [TrayState; 6] = [
        TrayState::Computing,
        TrayState::Waiting,
        TrayState::Owner,
        TrayState::User,
        TrayState::Condition,
        TrayState::Disconnected,
    ];

    #[test]
    fn every_state_has_its_own_decodable_icon() {
        let icons: Vec<Rgba> = ALL.iter().map(|&s| decode(tray_png(s)).unwrap()).collect();
        for (i, a) in icons.iter().enumerate() {
            assert_eq!(a.pixels.len(), (4 * a.width * a.height) as usize);
            assert!(
                a.pixels.chunks(4).any(|p| p[3] == 0),
                "a round icon has a clear corner"
            );
            for b in &icons[i + 1..] {
                assert_ne!(a.pixels, b.pixels, "two states share an icon");
            }
        }
        assert!(decode(app_png()).is_ok());
        assert!(decode(b"not a png").is_err());
    }
}
