//! Saturation of the quantisation range: how many of an update's coordinates lie outside [−range, range] and are
//! clamped before they are masked. A clamped update is biased (the aggregate no longer equals the mean of the
//! updates), so the site's operator must see it; but the count depends on the records, so it is logged locally
//! only and never sent. Only the count, its fraction and the (public) range are logged, never values.

use confide_common::secagg::QuantizationParams;

/// What quantisation will clamp in one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Saturation {
    pub clamped: usize,
    pub coordinates: usize,
    /// The study's quantisation range (public).
    pub range: f32,
}

impl Saturation {
    pub fn fraction(&self) -> f64 {
        self.clamped as f64 / self.coordinates.max(1) as f64
    }
}

/// The saturation of `update` under `quantisation`, or `None` if nothing is clamped.
pub fn saturation(quantisation: &QuantizationParams, update: &[f32]) -> Option<Saturation> {
    let clamped = quantisation.clamped_count(update);
    (clamped > 0).then_some(Saturation {
        clamped,
        coordinates: update.len(),
        range: quantisation.clip,
    })
}

/// Logs the saturation of a round's update at WARN if anything is clamped. Returns what it found.
pub fn warn_if_saturated(
    round: i64,
    quantisation: &QuantizationParams,
    update: &[f32],
) -> Option<Saturation> {
    let s = saturation(quantisation, update)?;
    tracing::warn!(
        round,
        clamped = s.clamped,
        coordinates = s.coordinates,
        fraction = s.fraction(),
        range = f64::from(s.range),
        "quantisation clamps coordinates of this site's update to the study's range: the aggregate is biased; \
         the study's quantisation range may be too small (this count stays on this machine)"
    );
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_coordinates_outside_the_range() {
        let q = QuantizationParams::for_participants(0.5, 32, 3, 10).unwrap();
        assert_eq!(saturation(&q, &[0.1, -0.5, 0.49, 0.0]), None);
        let s = warn_if_saturated(3, &q, &[0.7, -0.1, -2.0, 0.5]).unwrap();
        assert_eq!(
            s,
            Saturation {
                clamped: 2,
                coordinates: 4,
                range: 0.5
            }
        );
        assert_eq!(s.fraction(), 0.5);
        assert_eq!(saturation(&q, &[]), None);
    }
}
