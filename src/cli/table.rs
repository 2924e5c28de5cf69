//! Tables as the client prints them (kubectl's look: no borders, columns two spaces apart, ids
//! and names never broken), and sizes for people: what every view of `output` shares.

use comfy_table::{ColumnConstraint, ContentArrangement, Table, Width, presets::NOTHING};

/// `512 B`, `1.5 KiB`, `20.0 MiB`.
pub(super) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

pub(super) fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    table
}

/// The table as text: columns two spaces apart, as kubectl prints them. A column is never
/// narrower than its longest word, so that on a narrow terminal only text wraps, between words:
/// an id or a name is never broken (it is copied into the next command).
pub(super) fn trimmed(table: &mut Table) -> String {
    let mut widest: Vec<usize> = Vec::new();
    for row in table.header().into_iter().chain(table.row_iter()) {
        for (i, cell) in row.cell_iter().enumerate() {
            let longest = cell
                .content()
                .split_whitespace()
                .map(|word| word.chars().count())
                .max()
                .unwrap_or(0);
            if widest.len() <= i {
                widest.resize(i + 1, 0);
            }
            widest[i] = widest[i].max(longest);
        }
    }
    for (i, column) in table.column_iter_mut().enumerate() {
        let padding = (0, 2);
        column.set_padding(padding);
        let width = widest.get(i).copied().unwrap_or(0) + usize::from(padding.1);
        column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(
            u16::try_from(width).unwrap_or(u16::MAX),
        )));
    }
    table.trim_fmt()
}
