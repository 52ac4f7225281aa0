"""prunelaw reports: PDF reports from a run store and law cards (matplotlib, imported lazily).

Command line::

    reports build runs/ --law card.json --out report.pdf

Library (notebooks)::

    from data.runs import load
    from reports import plots, tables, laws
    frame = load("runs/")
    ax = plots.plot_loss_curves(frame[frame.parent == "smollm2-135m"])      # any axes, returned
    card = laws.open_cards(["card.json"])[0]
    plots.plot_loss_curves(frame, fit=laws.predictions(frame, card))      # law + bootstrap band
    plots.plot_matched_gap(tables.matched_comparison(frame, "init", "pruned"))

``reports.build.build_report(ReportConfig(...))`` lays the same functions out on pages.
"""
