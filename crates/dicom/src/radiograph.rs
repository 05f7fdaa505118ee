//! Synthetic radiographs of long bones, with and without a fracture: the Rust
//! twin of `models/train/synth.py`, which made the demo model's training data
//! (same construction and parameter ranges; not bit-identical, since the random
//! streams differ). Used for sample studies and load tests, never as evidence of
//! clinical performance.

use std::f32::consts::PI;

pub const SIZE: usize = 256;

/// A deterministic random stream (SplitMix64), so a seed gives the same image everywhere.
#[derive(Debug, Clone)]
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn uniform(&mut self, low: f32, high: f32) -> f32 {
        low + (high - low) * self.unit()
    }

    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound.max(1) as u64) as usize
    }

    fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.unit().max(1e-7), self.unit());
        (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
    }
}

fn chord(radius: f32, distance: f32) -> f32 {
    2.0 * (radius * radius - distance * distance).max(0.0).sqrt()
}

struct Bone {
    centre: [f32; 2],
    along: [f32; 2],
    across: [f32; 2],
    r_out: f32,
    r_in: f32,
    half_length: f32,
    flare: f32,
    cortex: f32,
    medulla: f32,
}

impl Bone {
    fn new(random: &mut Random, centre: [f32; 2], theta: f32, r_out: f32) -> Self {
        let cortex = random.uniform(0.65, 1.0);
        let r_in = r_out * (1.0 - random.uniform(0.22, 0.42));
        let half_length = random.uniform(70.0, 220.0);
        let flare = random.uniform(0.0, 0.35);
        let medulla = cortex * random.uniform(0.15, 0.45);
        Self {
            centre,
            along: [theta.cos(), theta.sin()],
            across: [-theta.sin(), theta.cos()],
            r_out,
            r_in,
            half_length,
            flare,
            cortex,
            medulla,
        }
    }

    /// Along-shaft position and distance to the (sideways-shifted) axis.
    fn coords(&self, x: f32, y: f32, shift: f32) -> (f32, f32) {
        let px = self.centre[0] + shift * self.across[0];
        let py = self.centre[1] + shift * self.across[1];
        let (dx, dy) = (x - px, y - py);
        let s = dx * self.along[0] + dy * self.along[1];
        let side = dx * self.across[0] + dy * self.across[1];
        let beyond = (s.abs() - self.half_length).max(0.0);
        (s, (side * side + beyond * beyond).sqrt())
    }

    fn widening(&self, s: f32) -> f32 {
        let t = (s.abs() / self.half_length).min(1.0);
        1.0 + self.flare * t * t * t
    }

    fn density(&self, x: f32, y: f32, shift: f32) -> f32 {
        let (s, distance) = self.coords(x, y, shift);
        let widening = self.widening(s);
        let outer = chord(self.r_out * widening, distance);
        let inner = chord(self.r_in * widening, distance);
        (self.cortex * (outer - inner) + self.medulla * inner) / (2.0 * self.r_out)
    }

    fn inside(&self, x: f32, y: f32, margin: f32) -> bool {
        let (s, distance) = self.coords(x, y, 0.0);
        distance <= self.r_out * self.widening(s) + margin
    }
}

/// A synthetic radiograph: 16-bit values (bright = dense), and the fracture's
/// bounding box in pixels (x0, y0, x1, y1) when there is one.
#[derive(Debug, Clone)]
pub struct Radiograph {
    pub pixels: Vec<u16>,
    pub fracture: Option<[f32; 4]>,
}

/// One image of `SIZE` x `SIZE` pixels.
pub fn generate(random: &mut Random, with_fracture: bool) -> Radiograph {
    let theta = random.uniform(0.0, PI);
    let centre = [
        SIZE as f32 / 2.0 + random.uniform(-55.0, 55.0),
        SIZE as f32 / 2.0 + random.uniform(-55.0, 55.0),
    ];
    let r1 = random.uniform(9.0, 24.0);
    let mut bones = vec![Bone::new(random, centre, theta, r1)];
    if random.unit() < 0.35 {
        let r2 = random.uniform(7.0, 20.0);
        let (theta2, centre2) = if random.unit() < 0.7 {
            let theta2 = theta + random.uniform(-0.15, 0.15);
            let gap = r1 + r2 + random.uniform(5.0, 25.0);
            let side = if random.unit() < 0.5 { 1.0 } else { -1.0 };
            let slide = random.uniform(-30.0, 30.0);
            let first = &bones[0];
            (
                theta2,
                [
                    centre[0] + side * gap * first.across[0] + slide * first.along[0],
                    centre[1] + side * gap * first.across[1] + slide * first.along[1],
                ],
            )
        } else {
            (
                theta + random.uniform(0.5, PI - 0.5),
                [
                    centre[0] + random.uniform(-40.0, 40.0),
                    centre[1] + random.uniform(-40.0, 40.0),
                ],
            )
        };
        bones.push(Bone::new(random, centre2, theta2, r2));
    }

    let mut image = vec![random.uniform(0.0, 0.15); SIZE * SIZE];
    for _ in 0..2 {
        let (fx, fy) = (
            random.uniform(-1.5, 1.5) / SIZE as f32,
            random.uniform(-1.5, 1.5) / SIZE as f32,
        );
        let (amplitude, phase) = (random.uniform(0.0, 0.05), random.uniform(0.0, 2.0 * PI));
        for (index, value) in image.iter_mut().enumerate() {
            let (x, y) = ((index % SIZE) as f32 + 0.5, (index / SIZE) as f32 + 0.5);
            *value += amplitude * (2.0 * PI * (fx * x + fy * y) + phase).cos();
        }
    }
    let soft_density = random.uniform(0.15, 0.45);
    let soft_radius = bones[0].r_out * random.uniform(2.5, 4.5);
    for (index, value) in image.iter_mut().enumerate() {
        let (x, y) = ((index % SIZE) as f32 + 0.5, (index / SIZE) as f32 + 0.5);
        let (_, distance) = bones[0].coords(x, y, 0.0);
        *value += soft_density * chord(soft_radius, distance) / (2.0 * soft_radius);
    }
    for _ in 0..random.below(4) {
        let angle = random.uniform(0.0, PI);
        let (cx, cy) = (
            random.uniform(0.0, SIZE as f32),
            random.uniform(0.0, SIZE as f32),
        );
        let (depth, width) = (random.uniform(0.01, 0.05), random.uniform(0.6, 1.8));
        for (index, value) in image.iter_mut().enumerate() {
            let (x, y) = ((index % SIZE) as f32 + 0.5, (index / SIZE) as f32 + 0.5);
            let e = (x - cx) * -angle.sin() + (y - cy) * angle.cos();
            *value -= depth * (-(e / width).powi(2)).exp();
        }
    }

    let fractured = if with_fracture {
        Some(random.below(bones.len()))
    } else {
        None
    };
    let mut fracture_box: Option<[f32; 4]> = None;
    for (bone_index, bone) in bones.iter().enumerate() {
        if Some(bone_index) != fractured {
            for (index, value) in image.iter_mut().enumerate() {
                *value += bone.density(
                    (index % SIZE) as f32 + 0.5,
                    (index / SIZE) as f32 + 0.5,
                    0.0,
                );
            }
            continue;
        }
        let s = visible_point(bone, random);
        let point = [
            bone.centre[0] + s * bone.along[0],
            bone.centre[1] + s * bone.along[1],
        ];
        let phi = random.uniform(-0.7, 0.7);
        let normal = [
            phi.cos() * bone.along[0] + phi.sin() * bone.across[0],
            phi.cos() * bone.along[1] + phi.sin() * bone.across[1],
        ];
        let along_line = [-normal[1], normal[0]];
        let (wave, frequency, wave_phase) = (
            random.uniform(0.0, 1.5),
            random.uniform(0.15, 0.6),
            random.uniform(0.0, 2.0 * PI),
        );
        let kind = random.unit();
        let (mut offset, depth) = if kind < 0.5 {
            (0.0, random.uniform(0.3, 0.95))
        } else if kind < 0.8 {
            (random.uniform(1.5, 5.0), random.uniform(0.2, 0.8))
        } else {
            (random.uniform(2.0, 6.0), 0.0)
        };
        if random.unit() >= 0.5 {
            offset = -offset;
        }
        let gap = random.uniform(0.8, 3.0);
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for (index, value) in image.iter_mut().enumerate() {
            let (x, y) = ((index % SIZE) as f32 + 0.5, (index / SIZE) as f32 + 0.5);
            let w = (x - point[0]) * along_line[0] + (y - point[1]) * along_line[1];
            let e = (x - point[0]) * normal[0]
                + (y - point[1]) * normal[1]
                + wave * (w * frequency + wave_phase).sin();
            let side = (e + 0.5).clamp(0.0, 1.0);
            let density =
                (1.0 - side) * bone.density(x, y, 0.0) + side * bone.density(x, y, offset);
            *value += density * (1.0 - depth * (-(e / (0.5 * gap)).powi(2)).exp());
            let shifted = (x - offset * bone.across[0], y - offset * bone.across[1]);
            let on_line = e.abs() <= 0.5 * gap + 2.5
                && (bone.inside(x, y, 1.5) || bone.inside(shifted.0, shifted.1, 1.5));
            if on_line {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
        if x1 >= x0 {
            fracture_box = Some([x0 - 0.5, y0 - 0.5, x1 + 0.5, y1 + 0.5]);
        }
    }

    let mut sorted = image.clone();
    sorted.sort_by(f32::total_cmp);
    let percentile = |fraction: f32| sorted[((sorted.len() - 1) as f32 * fraction) as usize];
    let (low, high) = (percentile(0.005), percentile(0.998));
    let gamma = random.uniform(0.7, 1.4);
    let scale = random.uniform(0.55, 1.0);
    let lift = random.uniform(0.0, 1.0 - scale);
    let sigma = random.uniform(0.004, 0.035);
    let pixels = image
        .iter()
        .map(|value| {
            let normalised = ((value - low) / (high - low).max(1e-6))
                .clamp(0.0, 1.0)
                .powf(gamma)
                * scale
                + lift;
            let noisy =
                normalised + random.normal() * sigma * (0.5 + normalised.clamp(0.0, 1.0).sqrt());
            (noisy.clamp(0.0, 1.0) * 65535.0).round() as u16
        })
        .collect();
    Radiograph {
        pixels,
        fracture: fracture_box,
    }
}

fn visible_point(bone: &Bone, random: &mut Random) -> f32 {
    let (low, high) = (28.0, SIZE as f32 - 28.0);
    for _ in 0..50 {
        let s = random.uniform(-0.8, 0.8) * bone.half_length;
        let (x, y) = (
            bone.centre[0] + s * bone.along[0],
            bone.centre[1] + s * bone.along[1],
        );
        if (low..=high).contains(&x) && (low..=high).contains(&y) {
            return s;
        }
    }
    let middle = SIZE as f32 / 2.0;
    let s = (middle - bone.centre[0]) * bone.along[0] + (middle - bone.centre[1]) * bone.along[1];
    s.clamp(-0.8 * bone.half_length, 0.8 * bone.half_length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_image_and_fractures_have_a_box() {
        let first = generate(&mut Random::new(7), true);
        let again = generate(&mut Random::new(7), true);
        assert_eq!(first.pixels, again.pixels);
        assert_eq!(first.pixels.len(), SIZE * SIZE);
        let [x0, y0, x1, y1] = first.fracture.expect("a fracture box");
        assert!(x0 < x1 && y0 < y1 && x1 <= SIZE as f32 && y1 <= SIZE as f32);
        assert!(generate(&mut Random::new(8), false).fracture.is_none());
    }
}
