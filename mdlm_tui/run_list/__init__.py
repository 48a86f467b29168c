"""The Runs screen (run_list: a folder named runs/ would fall under .gitignore's rule for run
folders): every run folder, its state, open, delete (to the trash) and export.

torch enters only through export_dialog.py, which imports core.export inside the export worker
thread, once an export is asked for; screen.py never imports it.
"""
