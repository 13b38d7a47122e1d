"""What both evaluation reports draw with: the synthetic benchmark's `report.md` and the paper evaluation's
`table.md` / `index.html` share one table writer, one neighbour-grid look, one similarity-space plot and one HTML
helper, so a fix or a new label lands in both."""
