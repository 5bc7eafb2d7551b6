def compare_interventions(r): pass
def comparison_markdown(r): pass
