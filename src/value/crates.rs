//! Values of the `time` and `bigdecimal` crates, which sea-orm offers beside chrono and
//! rust_decimal (features `with-time` and `with-bigdecimal`).
//!
//! They are captured as the chrono or rust_decimal value they equal, so a column holds one
//! kind of value in the payload, at every destination and in `verify`, whichever crate the
//! application's `Model` uses: a `time::OffsetDateTime` travels as the same instant and
//! offset to the nanosecond, a `BigDecimal` as the same decimal, scale included.
//! [`alternatives`] gives the same value in the application's own type where a field needs
//! it ([`Replicated::active_from_row`](crate::Replicated::active_from_row)).

use sea_orm::sea_query;

use super::Value;

/// `v` as the other crates' sea-query values: what a field of the `time` crate's or
/// `BigDecimal`'s type takes for it. Empty for any other value.
pub(crate) fn alternatives(v: &Value) -> Vec<sea_query::Value> {
    #[cfg_attr(
        not(any(feature = "with-time", feature = "with-bigdecimal")),
        allow(unused_mut)
    )]
    let mut out = Vec::new();
    #[cfg(feature = "with-time")]
    {
        use sea_query::Value as V;
        match v {
            Value::Date(d) => match d.as_ref().map(time_crate::to_date) {
                Some(d) => out.extend(d.map(|d| V::TimeDate(Some(d)))),
                None => out.push(V::TimeDate(None)),
            },
            Value::Time(t) => match t.as_ref().map(time_crate::to_time) {
                Some(t) => out.extend(t.map(|t| V::TimeTime(Some(t)))),
                None => out.push(V::TimeTime(None)),
            },
            Value::DateTime(t) => match t.as_ref().map(time_crate::to_datetime) {
                Some(t) => out.extend(t.map(|t| V::TimeDateTime(Some(t)))),
                None => out.push(V::TimeDateTime(None)),
            },
            Value::DateTimeWithTimeZone(t) => match t.as_ref().map(time_crate::to_zoned) {
                Some(t) => out.extend(t.map(|t| V::TimeDateTimeWithTimeZone(Some(t)))),
                None => out.push(V::TimeDateTimeWithTimeZone(None)),
            },
            Value::DateTimeUtc(t) => {
                let zoned = t.map(|t| t.fixed_offset());
                match zoned.as_ref().map(time_crate::to_zoned) {
                    Some(t) => out.extend(t.map(|t| V::TimeDateTimeWithTimeZone(Some(t)))),
                    None => out.push(V::TimeDateTimeWithTimeZone(None)),
                }
            }
            _ => {}
        }
    }
    #[cfg(feature = "with-bigdecimal")]
    if let Value::Decimal(d) = v {
        out.push(sea_query::Value::BigDecimal(
            d.as_ref().map(|d| Box::new(big_decimal::from_decimal(d))),
        ));
    }
    let _ = v;
    out
}

#[cfg(feature = "with-bigdecimal")]
pub(crate) mod big_decimal {
    use bigdecimal::BigDecimal;
    use bigdecimal::ToPrimitive;
    use rust_decimal::Decimal;

    /// The most digits after the point a `Decimal` keeps.
    const MAX_SCALE: i64 = 28;

    /// `b` as a `Decimal`: exactly with its scale where that fits, else with its trailing
    /// zeros dropped (the same value); `None` when its digits do not fit a `Decimal` (28
    /// or 29 significant digits).
    pub(crate) fn to_decimal(b: &BigDecimal) -> Option<Decimal> {
        exact(b).or_else(|| exact(&b.normalized()))
    }

    fn exact(b: &BigDecimal) -> Option<Decimal> {
        let (mut mantissa, scale) = b.as_bigint_and_exponent();
        let scale = if scale < 0 {
            mantissa *= num_pow10(scale.unsigned_abs())?;
            0
        } else {
            scale
        };
        if scale > MAX_SCALE {
            return None;
        }
        let m = mantissa.to_i128()?;
        Decimal::try_from_i128_with_scale(m, u32::try_from(scale).ok()?).ok()
    }

    fn num_pow10(exp: u64) -> Option<bigdecimal::num_bigint::BigInt> {
        // A decimal holds at most 29 digits: a larger power cannot fit anyway.
        (exp <= 29).then(|| bigdecimal::num_bigint::BigInt::from(10u8).pow(exp as u32))
    }

    /// `b` as a value: a `Decimal` where it fits (see [`to_decimal`]), else its plain text.
    pub(crate) fn to_value(b: &BigDecimal) -> crate::value::Value {
        match to_decimal(b) {
            Some(d) => crate::value::Value::Decimal(Some(d)),
            None => crate::value::Value::BigDecimal(Some(b.to_plain_string())),
        }
    }

    /// `d` as a `BigDecimal`, scale included.
    pub(crate) fn from_decimal(d: &Decimal) -> BigDecimal {
        BigDecimal::new(d.mantissa().into(), i64::from(d.scale()))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::str::FromStr;

        #[test]
        fn big_decimals_become_the_same_decimal() {
            for text in [
                "0",
                "1.50",
                "-0.000000000000000000000000001",
                "79228162514264337593543950335",
                "12345678901234567890.12345678",
                "1E+5",
            ] {
                let b = BigDecimal::from_str(text).unwrap();
                let d = to_decimal(&b).unwrap_or_else(|| panic!("{text}"));
                assert_eq!(BigDecimal::from_str(&d.to_string()).unwrap(), b, "{text}");
                assert_eq!(from_decimal(&d), b, "{text}");
            }
            assert_eq!(
                to_decimal(&BigDecimal::from_str("1.5000000000000000000000000000000").unwrap())
                    .unwrap()
                    .to_string(),
                "1.5"
            );
            for text in [
                "1234567890123456789012345678901234",
                "0.1234567890123456789012345678901",
            ] {
                assert_eq!(
                    to_decimal(&BigDecimal::from_str(text).unwrap()),
                    None,
                    "{text}"
                );
            }
        }
    }
}

#[cfg(feature = "with-time")]
pub(crate) mod time_crate {
    use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
    use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

    pub(crate) fn date(d: time::Date) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(d.year(), u32::from(u8::from(d.month())), u32::from(d.day()))
    }

    pub(crate) fn time_of_day(t: time::Time) -> Option<NaiveTime> {
        NaiveTime::from_hms_nano_opt(
            u32::from(t.hour()),
            u32::from(t.minute()),
            u32::from(t.second()),
            t.nanosecond(),
        )
    }

    pub(crate) fn datetime(t: PrimitiveDateTime) -> Option<NaiveDateTime> {
        Some(date(t.date())?.and_time(time_of_day(t.time())?))
    }

    pub(crate) fn zoned(t: OffsetDateTime) -> Option<DateTime<FixedOffset>> {
        let offset = FixedOffset::east_opt(t.offset().whole_seconds())?;
        let local = datetime(PrimitiveDateTime::new(t.date(), t.time()))?;
        offset.from_local_datetime(&local).single()
    }

    pub(crate) fn to_date(d: &NaiveDate) -> Option<time::Date> {
        use chrono::Datelike;
        let month = time::Month::try_from(u8::try_from(d.month()).ok()?).ok()?;
        time::Date::from_calendar_date(d.year(), month, u8::try_from(d.day()).ok()?).ok()
    }

    pub(crate) fn to_time(t: &NaiveTime) -> Option<time::Time> {
        use chrono::Timelike;
        time::Time::from_hms_nano(
            u8::try_from(t.hour()).ok()?,
            u8::try_from(t.minute()).ok()?,
            u8::try_from(t.second()).ok()?,
            t.nanosecond(),
        )
        .ok()
    }

    pub(crate) fn to_datetime(t: &NaiveDateTime) -> Option<PrimitiveDateTime> {
        Some(PrimitiveDateTime::new(
            to_date(&t.date())?,
            to_time(&t.time())?,
        ))
    }

    pub(crate) fn to_zoned(t: &DateTime<FixedOffset>) -> Option<OffsetDateTime> {
        let offset = UtcOffset::from_whole_seconds(t.offset().local_minus_utc()).ok()?;
        Some(to_datetime(&t.naive_local())?.assume_offset(offset))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn time_values_become_the_same_chrono_values_and_back() {
            let d = time::Date::from_calendar_date(2024, time::Month::February, 29).unwrap();
            let t = time::Time::from_hms_nano(23, 59, 59, 123_456_789).unwrap();
            let pdt = PrimitiveDateTime::new(d, t);
            let odt = pdt.assume_offset(UtcOffset::from_hms(5, 30, 0).unwrap());
            let z = zoned(odt).unwrap();
            assert_eq!(z.to_rfc3339(), "2024-02-29T23:59:59.123456789+05:30");
            assert_eq!(to_zoned(&z), Some(odt));
            assert_eq!(to_datetime(&datetime(pdt).unwrap()), Some(pdt));
            assert_eq!(to_date(&date(d).unwrap()), Some(d));
            assert_eq!(to_time(&time_of_day(t).unwrap()), Some(t));
        }
    }
}
