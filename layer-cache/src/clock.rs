//! [`Clock`]: a monotonic clock that also builds where the platform has none.

use std::time::Duration;

/// A point in time for measuring durations: [`std::time::Instant`] where the platform has a
/// clock, and nothing on WebAssembly without WASI (`wasm*-unknown-unknown`), where
/// `Instant::now` would panic: there every [`Clock::elapsed`] is zero, and hosts that want
/// timings measure around their calls into the module.
#[derive(Clone, Copy, Debug)]
pub struct Clock(
    #[cfg(not(all(target_family = "wasm", target_os = "unknown")))] std::time::Instant,
);

impl Clock {
    /// Now.
    pub fn now() -> Clock {
        Clock(
            #[cfg(not(all(target_family = "wasm", target_os = "unknown")))]
            std::time::Instant::now(),
        )
    }

    /// Time since [`Clock::now`] made this (zero where the platform has no clock).
    pub fn elapsed(&self) -> Duration {
        #[cfg(not(all(target_family = "wasm", target_os = "unknown")))]
        return self.0.elapsed();
        #[cfg(all(target_family = "wasm", target_os = "unknown"))]
        return Duration::ZERO;
    }
}
