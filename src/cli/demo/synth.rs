//! Synthetic fluorescence images, reproducible from a seed: bright round blobs of
//! varied radius and brightness on a noisy, slightly uneven background.
//!
//! Only integer arithmetic and IEEE-754 `+ - * /` are used (no `exp`, no libm), so
//! the same seed gives the same pixels on every machine and in every build.

use ndarray::Array3;

/// The splitmix64 generator: tiny, fast, and good enough for test images.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform float in `[low, high)`.
    pub fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }
}

/// The name of demo image `index`.
pub fn image_name(index: usize) -> String {
    format!("image_{index:03}")
}

/// The name of the labels segmented from `image`.
pub fn labels_name(image: &str) -> String {
    format!("{image}_labels")
}

/// The generator of image `index` of the run seeded with `seed`.
fn image_rng(seed: u64, index: usize) -> SplitMix64 {
    let base = SplitMix64::new(seed ^ 0x5EED_1DEA_5EED_1DEA).next_u64();
    let stream = (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    SplitMix64::new(base ^ stream)
}

/// Image `index` of the run seeded with `seed`: `uint16`, shape `(1, size, size)`.
pub fn image(seed: u64, index: usize, size: usize) -> Array3<u16> {
    let mut rng = image_rng(seed, index);
    let n = size * size;
    let s = size as f64;
    let mut values = vec![0.0f64; n];

    // Blobs: a smooth bump amp * (1 - d^2/r^2)^2 inside radius r, roughly Gaussian.
    let blobs = (n / 1800).max(4);
    let r_min = (s / 48.0).max(3.0);
    let r_max = (s / 16.0).max(r_min + 2.0);
    for _ in 0..blobs {
        let cy = rng.range(0.0, s);
        let cx = rng.range(0.0, s);
        let r = rng.range(r_min, r_max);
        let amp = rng.range(600.0, 2400.0);
        let y0 = (cy - r).floor().max(0.0) as usize;
        let y1 = ((cy + r).ceil() as usize).min(size);
        let x0 = (cx - r).floor().max(0.0) as usize;
        let x1 = ((cx + r).ceil() as usize).min(size);
        for y in y0..y1 {
            for x in x0..x1 {
                let dy = y as f64 + 0.5 - cy;
                let dx = x as f64 + 0.5 - cx;
                let q = 1.0 - (dy * dy + dx * dx) / (r * r);
                if q > 0.0 {
                    values[y * size + x] += amp * q * q;
                }
            }
        }
    }

    // Background: a gentle illumination gradient plus noise (a sum of four uniforms,
    // close to Gaussian with a standard deviation of about 14).
    let tilt = rng.range(-1.0, 1.0);
    for y in 0..size {
        for x in 0..size {
            let gradient = 60.0 * tilt * (x as f64 - s / 2.0) / s;
            let noise = (rng.unit() + rng.unit() + rng.unit() + rng.unit() - 2.0) * 25.0;
            values[y * size + x] += 200.0 + gradient + noise;
        }
    }

    let pixels = values
        .into_iter()
        .map(|v| v.round().clamp(0.0, f64::from(u16::MAX)) as u16)
        .collect();
    Array3::from_shape_vec((1, size, size), pixels).expect("shape matches")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_reproducible_and_differ_by_seed_and_index() {
        let a = image(7, 3, 64);
        assert_eq!(a, image(7, 3, 64));
        assert_ne!(a, image(8, 3, 64));
        assert_ne!(a, image(7, 4, 64));
        assert_eq!(a.shape(), &[1, 64, 64]);
        // Blobs make some pixels far brighter than the background.
        assert!(a.iter().any(|&v| v > 800));
        assert!(a.iter().filter(|&&v| v < 400).count() > 64 * 64 / 2);
    }
}
