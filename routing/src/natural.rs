//! Natural order for names people number: `svc2` before `svc10`, as a person sorts them,
//! where byte order puts `svc10` first. Runs of ASCII digits compare by value (then by
//! length, so `a01` and `a1` are not equal), everything else byte by byte.

use std::cmp::Ordering;

/// Compares `a` and `b` in natural order.
pub fn cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (da, ra) = split_digits(a);
                let (db, rb) = split_digits(b);
                let (va, vb) = (trim_zeros(da), trim_zeros(db));
                let by_value = va.len().cmp(&vb.len()).then_with(|| va.cmp(vb));
                match by_value.then_with(|| da.len().cmp(&db.len())) {
                    Ordering::Equal => (a, b) = (ra, rb),
                    other => return other,
                }
            }
            (Some(x), Some(y)) => match x.cmp(y) {
                Ordering::Equal => (a, b) = (&a[1..], &b[1..]),
                other => return other,
            },
        }
    }
}

fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    s.split_at(n)
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| c == b'0').count();
    &s[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_sort_by_value_and_the_rest_by_bytes() {
        let mut names = vec![
            "svc10",
            "svc2",
            "svc1",
            "svc100",
            "cart",
            "svc02",
            "svc",
            "svc1a",
            "svc1b",
            "svc01",
            "a99999999999999999999999",
            "a100000000000000000000000",
        ];
        names.sort_by(|a, b| cmp(a, b));
        assert_eq!(
            names,
            [
                "a99999999999999999999999",
                "a100000000000000000000000",
                "cart",
                "svc",
                "svc1",
                "svc1a",
                "svc1b",
                "svc01",
                "svc2",
                "svc02",
                "svc10",
                "svc100",
            ]
        );
        assert_eq!(cmp("x", "x"), Ordering::Equal);
    }
}
