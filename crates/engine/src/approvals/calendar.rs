//! Hong Kong business hours for reminders and escalation: a request sent on Friday evening is not
//! "8 hours overdue" on Saturday morning.

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeSet;
use std::time::Duration;

/// Hong Kong general holidays, as gazetted by the HKSAR Government under the General Holidays
/// Ordinance (Cap. 149; "General holidays for 2025/2026/2027", Gazette notices on www.gov.hk).
/// Sundays are not listed (they are off anyway); substitution days ("the day following …") are.
const HK_HOLIDAYS: &[(i16, i8, i8)] = &[
    // 2025
    (2025, 1, 1),   // The first day of January
    (2025, 1, 29),  // Lunar New Year's Day
    (2025, 1, 30),  // The second day of Lunar New Year
    (2025, 1, 31),  // The third day of Lunar New Year
    (2025, 4, 4),   // Ching Ming Festival
    (2025, 4, 18),  // Good Friday
    (2025, 4, 19),  // The day following Good Friday
    (2025, 4, 21),  // Easter Monday
    (2025, 5, 1),   // Labour Day
    (2025, 5, 5),   // The Birthday of the Buddha
    (2025, 5, 31),  // Tuen Ng Festival
    (2025, 7, 1),   // HKSAR Establishment Day
    (2025, 10, 1),  // National Day
    (2025, 10, 7),  // The day following the Chinese Mid-Autumn Festival
    (2025, 10, 29), // Chung Yeung Festival
    (2025, 12, 25), // Christmas Day
    (2025, 12, 26), // The first weekday after Christmas Day
    // 2026
    (2026, 1, 1),   // The first day of January
    (2026, 2, 17),  // Lunar New Year's Day
    (2026, 2, 18),  // The second day of Lunar New Year
    (2026, 2, 19),  // The third day of Lunar New Year
    (2026, 4, 3),   // Good Friday
    (2026, 4, 4),   // The day following Good Friday
    (2026, 4, 6),   // The day following Ching Ming Festival (5 April is a Sunday)
    (2026, 4, 7),   // The day following Easter Monday
    (2026, 5, 1),   // Labour Day
    (2026, 5, 25),  // The day following the Birthday of the Buddha (24 May is a Sunday)
    (2026, 6, 19),  // Tuen Ng Festival
    (2026, 7, 1),   // HKSAR Establishment Day
    (2026, 9, 26),  // The day following the Chinese Mid-Autumn Festival
    (2026, 10, 1),  // National Day
    (2026, 10, 19), // The day following Chung Yeung Festival (18 October is a Sunday)
    (2026, 12, 25), // Christmas Day
    (2026, 12, 26), // The first weekday after Christmas Day
    // 2027
    (2027, 1, 1),   // The first day of January
    (2027, 2, 6),   // Lunar New Year's Day
    (2027, 2, 8),   // The third day of Lunar New Year (the second day is a Sunday)
    (2027, 2, 9),   // The fourth day of Lunar New Year
    (2027, 3, 26),  // Good Friday
    (2027, 3, 27),  // The day following Good Friday
    (2027, 3, 29),  // Easter Monday
    (2027, 4, 5),   // Ching Ming Festival
    (2027, 5, 1),   // Labour Day
    (2027, 5, 13),  // The Birthday of the Buddha
    (2027, 6, 9),   // Tuen Ng Festival
    (2027, 7, 1),   // HKSAR Establishment Day
    (2027, 9, 16),  // The day following the Chinese Mid-Autumn Festival
    (2027, 10, 1),  // National Day
    (2027, 10, 8),  // Chung Yeung Festival
    (2027, 12, 25), // Christmas Day
    (2027, 12, 27), // The first weekday after Christmas Day
];

/// Working hours on working days in one zone; holidays are whole days off.
#[derive(Debug, Clone)]
pub struct BusinessCalendar {
    pub zone: TimeZone,
    pub open: Time,
    pub close: Time,
    /// Monday = index 0 … Sunday = index 6.
    pub workdays: [bool; 7],
    pub holidays: BTreeSet<Date>,
}

impl Default for BusinessCalendar {
    /// Asia/Hong_Kong, Monday to Friday 09:00–18:00, Hong Kong general holidays built in.
    fn default() -> Self {
        // Hong Kong has had no daylight saving since 1979, so a fixed +08:00 is the fallback when
        // the system has no tz database.
        let zone = TimeZone::get("Asia/Hong_Kong").unwrap_or_else(|_| TimeZone::fixed(jiff::tz::offset(8)));
        BusinessCalendar {
            zone,
            open: Time::constant(9, 0, 0, 0),
            close: Time::constant(18, 0, 0, 0),
            workdays: [true, true, true, true, true, false, false],
            holidays: hong_kong_holidays(),
        }
    }
}

/// The built-in Hong Kong general holidays (2025–2027).
pub fn hong_kong_holidays() -> BTreeSet<Date> {
    HK_HOLIDAYS.iter().filter_map(|&(y, m, d)| Date::new(y, m, d).ok()).collect()
}

/// Longest stretch `add_business_time` walks before giving up (a calendar with no working day).
const MAX_DAYS: usize = 366 * 50;

impl BusinessCalendar {
    fn is_working_day(&self, date: Date) -> bool {
        let weekday = date.weekday().to_monday_zero_offset() as usize;
        self.workdays[weekday] && !self.holidays.contains(&date)
    }

    /// `date` at `time` in the calendar's zone.
    fn instant(&self, date: Date, time: Time) -> Option<Timestamp> {
        date.to_datetime(time).to_zoned(self.zone.clone()).ok().map(|z| z.timestamp())
    }

    /// Whether `at` falls in business hours.
    pub fn is_business_time(&self, at: Timestamp) -> bool {
        let local = self.zone.to_datetime(at);
        self.is_working_day(local.date()) && local.time() >= self.open && local.time() < self.close
    }

    /// The instant when `business` of business time has passed since `from` (time outside
    /// business hours does not count).
    pub fn add_business_time(&self, from: Timestamp, business: Duration) -> Timestamp {
        let mut remaining = SignedDuration::try_from(business).unwrap_or(SignedDuration::MAX);
        let mut at = from;
        for _ in 0..MAX_DAYS {
            let local = self.zone.to_datetime(at);
            let (date, time) = (local.date(), local.time());
            if !self.is_working_day(date) || time >= self.close {
                let Some(next) = date.tomorrow().ok().and_then(|d| self.instant(d, self.open)) else {
                    return at;
                };
                at = next;
                continue;
            }
            if time < self.open {
                match self.instant(date, self.open) {
                    Some(open) => at = open,
                    None => return at,
                }
            }
            let Some(close) = self.instant(date, self.close) else {
                return at;
            };
            let available = at.duration_until(close);
            if remaining <= available {
                return at.checked_add(remaining).unwrap_or(close);
            }
            remaining -= available;
            at = close;
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hkt(text: &str) -> Timestamp {
        let dt: jiff::civil::DateTime = text.parse().expect("datetime");
        dt.to_zoned(TimeZone::fixed(jiff::tz::offset(8))).expect("zoned").timestamp()
    }

    fn hours(n: u64) -> Duration {
        Duration::from_secs(n * 3600)
    }

    #[test]
    fn friday_evening_plus_two_hours_is_monday_morning() {
        let cal = BusinessCalendar::default();
        // 2026-11-27 is a Friday.
        assert_eq!(cal.add_business_time(hkt("2026-11-27T17:00"), hours(2)), hkt("2026-11-30T10:00"));
    }

    #[test]
    fn monday_holiday_pushes_to_tuesday() {
        let cal = BusinessCalendar::default();
        // 2026-10-16 Friday; Monday 19 October is the day following Chung Yeung.
        assert_eq!(cal.add_business_time(hkt("2026-10-16T17:00"), hours(2)), hkt("2026-10-20T10:00"));
    }

    #[test]
    fn across_christmas_2026() {
        let cal = BusinessCalendar::default();
        // Thursday 24 Dec 17:00: one hour left that day; 25 (Fri) and 26 (Sat) off, 27 Sunday.
        assert_eq!(cal.add_business_time(hkt("2026-12-24T17:00"), hours(4)), hkt("2026-12-28T12:00"));
        assert!(!cal.is_business_time(hkt("2026-12-25T10:00")));
        assert!(cal.is_business_time(hkt("2026-12-24T10:00")));
    }

    #[test]
    fn across_lunar_new_year_2027() {
        let cal = BusinessCalendar::default();
        // Friday 5 Feb 2027 16:00; 6 (Sat), 7 (Sun), 8 and 9 (holidays) off: resumes Wed 10 Feb.
        assert_eq!(cal.add_business_time(hkt("2027-02-05T16:00"), hours(8)), hkt("2027-02-10T15:00"));
        assert!(!cal.is_business_time(hkt("2027-02-08T10:00")));
        assert!(!cal.is_business_time(hkt("2027-02-09T10:00")));
    }

    #[test]
    fn outside_hours_and_long_spans() {
        let cal = BusinessCalendar::default();
        assert!(!cal.is_business_time(hkt("2026-11-30T08:59")));
        assert!(cal.is_business_time(hkt("2026-11-30T09:00")));
        assert!(!cal.is_business_time(hkt("2026-11-30T18:00")));
        assert!(!cal.is_business_time(hkt("2026-11-28T10:00")));
        // Before opening counts from 09:00; 9h is exactly one working day.
        assert_eq!(cal.add_business_time(hkt("2026-11-30T07:00"), hours(9)), hkt("2026-11-30T18:00"));
        assert_eq!(cal.add_business_time(hkt("2026-11-30T07:00"), hours(10)), hkt("2026-12-01T10:00"));
    }

    #[test]
    fn holidays_cover_the_three_years() {
        let all = hong_kong_holidays();
        for year in [2025, 2026, 2027] {
            assert!(all.iter().filter(|d| d.year() == year).count() >= 16, "{year}");
        }
        assert!(all.contains(&Date::constant(2026, 12, 26)));
    }
}
