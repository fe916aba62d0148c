//! embassy-time driver on SysTick: a 1 kHz tick from the 25 MHz core clock
//! counts milliseconds (embassy-time's `tick-hz-1_000`); each tick checks
//! the timer queue's next expiration.
//!
//! Simple and the same on every Cortex-M, at the cost of waking the core
//! every millisecond; a low-power board would use a free-running timer with
//! a compare interrupt (tickless) instead.

use core::cell::{Cell, RefCell};
use core::task::Waker;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;
use critical_section::{CriticalSection, Mutex};
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

use crate::hw::SYSCLK_HZ;

struct SysTickDriver {
    ticks: Mutex<Cell<u64>>,
    alarm: Mutex<Cell<u64>>,
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    ticks: Mutex::new(Cell::new(0)),
    alarm: Mutex::new(Cell::new(u64::MAX)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

impl SysTickDriver {
    fn expire(&self, cs: CriticalSection<'_>, now: u64) {
        let next = self.queue.borrow(cs).borrow_mut().next_expiration(now);
        self.alarm.borrow(cs).set(next);
    }
}

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.ticks.borrow(cs).get())
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let changed = self.queue.borrow(cs).borrow_mut().schedule_wake(at, waker);
            if changed {
                // Wakes at once what is already due; otherwise the next tick
                // at or after `at` does.
                self.expire(cs, self.ticks.borrow(cs).get());
            }
        })
    }
}

/// Start the millisecond tick.
pub fn init(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(SYSCLK_HZ / 1000 - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// Milliseconds since boot.
pub fn now_ms() -> u64 {
    embassy_time::Instant::now().as_millis()
}

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let t = DRIVER.ticks.borrow(cs);
        let now = t.get() + 1;
        t.set(now);
        if now >= DRIVER.alarm.borrow(cs).get() {
            DRIVER.expire(cs, now);
        }
    })
}
