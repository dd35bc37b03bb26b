//! A small nucleus segmentation: a 5x5 binomial blur, an automatic Otsu threshold,
//! and 8-connected components. Integer arithmetic throughout, so results are
//! identical in every build.

use ndarray::{Array2, ArrayView2};

/// Components smaller than this many pixels are dropped as noise.
const MIN_AREA: usize = 5;

/// One segmented cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Its label value (1..=k, in raster order of each cell's first pixel).
    pub label: u32,
    /// Its pixel count.
    pub area: i64,
    /// Mean column of its pixels.
    pub centroid_x: f64,
    /// Mean row of its pixels.
    pub centroid_y: f64,
    /// Mean intensity of its pixels in the original image.
    pub mean_intensity: f64,
}

/// Segments a 2-d image: labels (0 = background, 1..=k) and one [`Cell`] per label.
pub fn segment(image: ArrayView2<'_, u16>) -> (Array2<u32>, Vec<Cell>) {
    let smooth = blur(image);
    let threshold = otsu(&smooth);
    let (height, width) = smooth.dim();
    let mut labels = Array2::<u32>::zeros((height, width));
    let mut visited = Array2::<bool>::from_elem((height, width), false);
    let mut cells = Vec::new();
    let mut pixels = Vec::new();
    let mut stack = Vec::new();
    for y in 0..height {
        for x in 0..width {
            if visited[(y, x)] || smooth[(y, x)] <= threshold {
                continue;
            }
            // Flood-fill this component.
            visited[(y, x)] = true;
            stack.push((y, x));
            pixels.clear();
            while let Some((py, px)) = stack.pop() {
                pixels.push((py, px));
                for ny in py.saturating_sub(1)..(py + 2).min(height) {
                    for nx in px.saturating_sub(1)..(px + 2).min(width) {
                        if !visited[(ny, nx)] && smooth[(ny, nx)] > threshold {
                            visited[(ny, nx)] = true;
                            stack.push((ny, nx));
                        }
                    }
                }
            }
            if pixels.len() < MIN_AREA {
                continue;
            }
            let label = cells.len() as u32 + 1;
            let (mut sum_x, mut sum_y, mut sum_v) = (0u64, 0u64, 0u64);
            for &(py, px) in &pixels {
                labels[(py, px)] = label;
                sum_x += px as u64;
                sum_y += py as u64;
                sum_v += u64::from(image[(py, px)]);
            }
            let area = pixels.len() as f64;
            cells.push(Cell {
                label,
                area: pixels.len() as i64,
                centroid_x: sum_x as f64 / area,
                centroid_y: sum_y as f64 / area,
                mean_intensity: sum_v as f64 / area,
            });
        }
    }
    (labels, cells)
}

/// A 5x5 binomial blur (weights 1 4 6 4 1 along each axis), edges clamped.
fn blur(image: ArrayView2<'_, u16>) -> Array2<u16> {
    const W: [u32; 5] = [1, 4, 6, 4, 1];
    let (height, width) = image.dim();
    let clamp = |i: usize, k: usize, n: usize| (i + k).saturating_sub(2).min(n - 1);
    let mut rows = Array2::<u32>::zeros((height, width));
    for y in 0..height {
        for x in 0..width {
            rows[(y, x)] = (0..5)
                .map(|k| W[k] * u32::from(image[(y, clamp(x, k, width))]))
                .sum();
        }
    }
    let mut out = Array2::<u16>::zeros((height, width));
    for y in 0..height {
        for x in 0..width {
            let sum: u32 = (0..5).map(|k| W[k] * rows[(clamp(y, k, height), x)]).sum();
            out[(y, x)] = ((sum + 128) / 256) as u16;
        }
    }
    out
}

/// Otsu's threshold: the value `t` that best splits the histogram into `<= t` and
/// `> t` (maximal between-class variance); `u16::MAX` when the image is flat.
fn otsu(image: &Array2<u16>) -> u16 {
    let mut histogram = vec![0u64; 1 << 16];
    for &v in image {
        histogram[usize::from(v)] += 1;
    }
    let total = image.len() as f64;
    let sum_all: f64 = histogram
        .iter()
        .enumerate()
        .map(|(v, &c)| v as f64 * c as f64)
        .sum();
    // A flat image has no split: nothing is above `u16::MAX`.
    let (mut best, mut best_t) = (-1.0f64, u16::MAX);
    let (mut w0, mut sum0) = (0.0f64, 0.0f64);
    for (t, &count) in histogram.iter().enumerate() {
        w0 += count as f64;
        sum0 += t as f64 * count as f64;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let diff = sum0 / w0 - (sum_all - sum0) / w1;
        let between = w0 * w1 * diff * diff;
        if between > best {
            best = between;
            best_t = t as u16;
        }
    }
    best_t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_squares_on_a_dark_background_are_two_cells() {
        let mut image = Array2::<u16>::from_elem((40, 40), 100);
        for y in 5..15 {
            for x in 5..15 {
                image[(y, x)] = 2000;
            }
        }
        for y in 25..35 {
            for x in 20..36 {
                image[(y, x)] = 3000;
            }
        }
        let (labels, cells) = segment(image.view());
        assert_eq!(cells.len(), 2);
        for cell in &cells {
            let count = labels.iter().filter(|&&l| l == cell.label).count();
            assert_eq!(cell.area as usize, count);
        }
        assert_eq!(labels[(10, 10)], 1);
        assert_eq!(labels[(30, 28)], 2);
        assert_eq!(labels[(0, 0)], 0);
        assert!((cells[0].centroid_x - 9.5).abs() < 0.01);
        assert!((cells[1].centroid_y - 29.5).abs() < 0.01);
    }

    #[test]
    fn a_flat_image_has_no_cells() {
        let image = Array2::<u16>::from_elem((8, 8), 7);
        let (labels, cells) = segment(image.view());
        assert!(cells.is_empty());
        assert!(labels.iter().all(|&l| l == 0));
    }
}
