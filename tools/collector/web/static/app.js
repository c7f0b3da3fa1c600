// Progressive enhancement only: every page works without it.
// A filter's <select class="autosubmit"> submits its form when changed.
document.addEventListener("change", function (e) {
  if (e.target.matches && e.target.matches("select.autosubmit") && e.target.form) {
    e.target.form.submit();
  }
});
