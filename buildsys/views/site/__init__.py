"""The review site: ``buildsys report --html DIR`` writes a static site of the project's store
for people who would rather look than read (see :mod:`buildsys.views.site.generate`)."""
