"""Stage 5: plan and run exports, choose modes, write files and reports."""
